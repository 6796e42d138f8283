// A counter in device memory that one dispatch reads and advances, so that a recorded dispatch
// replays from the value the previous one left (optim.comp's step count, random.comp's Philox
// offset). Invocation 0 of every workgroup reads the counter's words (atomically) into
// counter_words; the last workgroup to arrive, counted atomically in the word `arrive` (0
// between dispatches), stores the advanced words and resets the count. So no workgroup reads a
// value another has already advanced, whatever order the workgroups run in.
// Each word index comes with the slot of its chunk (SLOT_<field>, uniform).
//   counter_load(slot, at, k)        at the start, by every invocation (uniform control flow)
//   counter_store(slot, at, k, aslot, arrive, w)
//                                    at the end, by every invocation: words at.. become w
shared uint counter_words[4];

void counter_load(uint slot, uint at, uint k) {
    if (gl_LocalInvocationIndex == 0u)
        for (uint j = 0u; j < k; ++j) counter_words[j] = atomicOr(ARENA_AT(slot, at + j), 0u);
    barrier();
}

void counter_store(uint slot, uint at, uint k, uint aslot, uint arrive, uvec4 next) {
    if (gl_LocalInvocationIndex != 0u) return;
    memoryBarrierBuffer();  // this workgroup's reads of the counter come before its arrival
    if (atomicAdd(ARENA_AT(aslot, arrive), 1u) != gl_NumWorkGroups.x - 1u) return;
    memoryBarrierBuffer();
    for (uint j = 0u; j < k; ++j) atomicExchange(ARENA_AT(slot, at + j), next[j]);
    atomicExchange(ARENA_AT(aslot, arrive), 0u);
}
