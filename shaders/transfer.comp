#version 450
#extension GL_GOOGLE_include_directive : require
// Word copies between the host-visible staging buffer and the arena: the only way bytes enter
// or leave device memory, since Kompute cannot copy sub-ranges of a buffer.
#include "common.glsl"

layout(local_size_x = 256) in;

layout(constant_id = 0) const uint TO_ARENA = 0u;  // 1: staging -> arena (upload), 0: download

layout(push_constant) uniform Params { uint n_words; uint arena_word; uint staging_word; } p;

void main() {
    uint threads = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint w = gl_GlobalInvocationID.x; w < p.n_words; w += threads) {
        if (TO_ARENA == 1u) ARENA(p.arena_word + w) = staging[p.staging_word + w];
        else staging[p.staging_word + w] = ARENA(p.arena_word + w);
    }
}
