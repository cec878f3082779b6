// Shared device code of spikemoe's fused multi-step LIF kernels (lif.cu, emsa_gate.cu,
// emsp_gate.cu). Plain CUDA C++ with no CUDA header: it compiles with nvcc, with NVRTC
// (cupy.RawModule) and, after cpu_shim.h, with g++.
//
// Layout: every tensor is [T, N] contiguous (time-major, a [T, ...] tensor flattened);
// one thread owns one neuron n and walks t = 0 .. T-1 (forward) or T-1 .. 0 (backward).
// Storage: float, spk_f16 (IEEE half bits) or spk_bf16 (bfloat16 bits); the membrane
// state and every accumulation are float32.
//
// SpikingJelly 2.0 LIFNode semantics (spikingjelly._ops.lif.reference, same operation order
// so that float32 results agree bit for bit on the CPU):
//   H[t] = V[t-1] + (X[t] - (V[t-1] - V_r)) / tau         decay_input
//   H[t] = V[t-1] - (V[t-1] - V_r) / tau + X[t]           not decay_input
//   S[t] = H[t] >= V_th
//   V[t] = S ? V_r : H[t]                                  hard reset (V_r = v_reset)
//   V[t] = H[t] - S V_th                                   soft reset (V_r = 0 in the charge)
// Backward, surrogate sigma'(u) = alpha sig(alpha u)(1 - sig(alpha u)), u = H - V_th:
//   dV/dH = 1 - S + (V_r - H) sigma'   (hard; the sigma' term only without detach_reset)
//         = 1 - V_th sigma'            (soft; 1 with detach_reset)
//   gH[t] = gS[t] sigma' + gV[t] dV/dH,   gX[t] = gH / tau (decay_input) or gH,
//   gV[t-1] = gH - gH / tau
// The forward saves H (float32, 4 bytes per element) and nothing else; the backward
// recomputes S and sigma' from it.
#pragma once

#ifndef SPIKEMOE_CPU
#define SPIKEMOE_CUDA 1
#endif

#define SPIKEMOE_MAX_BLOCK 1024

#define SPIKEMOE_DECAY_INPUT 1
#define SPIKEMOE_SOFT_RESET 2
#define SPIKEMOE_DETACH_RESET 4

struct spk_f16 {
    unsigned short bits;
};
struct spk_bf16 {
    unsigned short bits;
};

// ---- storage <-> float32 ----------------------------------------------------------------
__device__ __forceinline__ float spk_load(const float* p, long long i) { return p[i]; }

__device__ __forceinline__ float spk_load(const spk_bf16* p, long long i) {
    return __uint_as_float(static_cast<unsigned int>(p[i].bits) << 16);
}

__device__ __forceinline__ float spk_load(const spk_f16* p, long long i) {
#ifdef SPIKEMOE_CUDA
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p[i].bits));
    return f;
#else
    return spikemoe_cpu_f16_to_f32(p[i].bits);
#endif
}

__device__ __forceinline__ void spk_store(float* p, long long i, float v) { p[i] = v; }

__device__ __forceinline__ void spk_store(spk_bf16* p, long long i, float v) {
    // float32 -> bfloat16, round to nearest even (NaN stays a quiet NaN).
    unsigned int u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        p[i].bits = static_cast<unsigned short>((u >> 16) | 0x40u);
        return;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    p[i].bits = static_cast<unsigned short>(u >> 16);
}

__device__ __forceinline__ void spk_store(spk_f16* p, long long i, float v) {
#ifdef SPIKEMOE_CUDA
    unsigned short b;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(b) : "f"(v));
    p[i].bits = b;
#else
    p[i].bits = spikemoe_cpu_f32_to_f16(v);
#endif
}

// ---- the neuron -------------------------------------------------------------------------
struct LifParams {
    float tau, v_th, v_reset, alpha;  // v_reset is 0 for a soft reset (the charge's V_r)
    bool decay_input, soft_reset, detach_reset;
};

__device__ __forceinline__ LifParams lif_params(float tau, float v_th, float v_reset, float alpha,
                                                int flags) {
    LifParams p;
    p.tau = tau;
    p.v_th = v_th;
    p.v_reset = v_reset;
    p.alpha = alpha;
    p.decay_input = (flags & SPIKEMOE_DECAY_INPUT) != 0;
    p.soft_reset = (flags & SPIKEMOE_SOFT_RESET) != 0;
    p.detach_reset = (flags & SPIKEMOE_DETACH_RESET) != 0;
    return p;
}

// The neuron this thread owns; n >= N means the thread has nothing to do.
__device__ __forceinline__ long long spk_neuron_index() {
    return static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ float lif_charge(float v, float x, const LifParams& p) {
    return p.decay_input ? v + (x - (v - p.v_reset)) / p.tau : v - (v - p.v_reset) / p.tau + x;
}

__device__ __forceinline__ float lif_after_spike(float h, bool fired, const LifParams& p) {
    if (p.soft_reset) return fired ? h - p.v_th : h;
    return fired ? p.v_reset : h;
}

// One backward step: gH from the spike's gradient gs and the carried gV; returns gH and
// writes gX (to *gx) and the gV carried to t-1 (to *carry).
__device__ __forceinline__ void lif_backward_step(float h, float gs, float* carry, float* gx,
                                                  const LifParams& p) {
    const float sig = 1.0f / (1.0f + expf(-(p.alpha * (h - p.v_th))));
    const float sg = (1.0f - sig) * sig * p.alpha;
    float reset_grad;
    if (p.soft_reset) {
        reset_grad = p.detach_reset ? 1.0f : 1.0f - p.v_th * sg;
    } else {
        reset_grad = h >= p.v_th ? 0.0f : 1.0f;
        if (!p.detach_reset) reset_grad = reset_grad + (p.v_reset - h) * sg;
    }
    const float gh = gs * sg + *carry * reset_grad;
    *gx = p.decay_input ? gh / p.tau : gh;
    *carry = gh - gh / p.tau;
}
