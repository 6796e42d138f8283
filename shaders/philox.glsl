// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a
// counter-based generator, so any element's draw is a pure function of (key, counter) and every
// invocation computes its own without shared state. vkgrad/random.py holds the numpy twin; the
// two must agree bit for bit (tests check the published known-answer vectors on both).

const uint PHILOX_M0 = 0xD2511F53u, PHILOX_M1 = 0xCD9E8D57u;   // round multipliers
const uint PHILOX_W0 = 0x9E3779B9u, PHILOX_W1 = 0xBB67AE85u;   // key schedule (Weyl) increments

uvec4 philox4x32_10(uvec4 ctr, uvec2 key) {
    [[unroll]] for (int r = 0; r < 10; ++r) {
        if (r > 0) key += uvec2(PHILOX_W0, PHILOX_W1);
        uint hi0, lo0, hi1, lo1;
        umulExtended(PHILOX_M0, ctr.x, hi0, lo0);
        umulExtended(PHILOX_M1, ctr.z, hi1, lo1);
        ctr = uvec4(hi1 ^ ctr.y ^ key.x, lo1, hi0 ^ ctr.w ^ key.y, lo0);
    }
    return ctr;
}
