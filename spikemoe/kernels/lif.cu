// Fused multi-step LIF neuron, forward and backward (SpikingJelly 2.0 LIFNode semantics;
// the equations are in lif_core.cuh). One thread per neuron, x/spike/gx in storage type S,
// state, H and gradients of the state in float32.
//
//   lif_fwd_<S>(x [T,N], v0 [N], spike [T,N], h [T,N] or null, v_last [N], N, T, params)
//   lif_bwd_<S>(gs [T,N], gv_last [N] or null, h [T,N], gx [T,N], gv0 [N], N, T, params)
// params = tau, v_th, v_reset, alpha, flags (SPIKEMOE_DECAY_INPUT | _SOFT_RESET | _DETACH_RESET).
// Saved for the backward: h only (4 bytes per element; h = null in inference saves nothing).
#include "lif_core.cuh"

template <typename S>
__device__ __forceinline__ void lif_forward(const S* __restrict__ x, const float* __restrict__ v0,
                                            S* __restrict__ spike, float* __restrict__ h_seq,
                                            float* __restrict__ v_last, long long N, int T,
                                            const LifParams& p) {
    const long long n = spk_neuron_index();
    if (n >= N) return;
    float v = v0[n];
    for (int t = 0; t < T; ++t) {
        const long long i = t * N + n;  // [T, N] -> flat
        const float h = lif_charge(v, spk_load(x, i), p);
        const bool fired = h >= p.v_th;
        spk_store(spike, i, fired ? 1.0f : 0.0f);
        if (h_seq != nullptr) h_seq[i] = h;
        v = lif_after_spike(h, fired, p);
    }
    v_last[n] = v;
}

template <typename S>
__device__ __forceinline__ void lif_backward(const S* __restrict__ gs,
                                             const float* __restrict__ gv_last,
                                             const float* __restrict__ h_seq, S* __restrict__ gx,
                                             float* __restrict__ gv0, long long N, int T,
                                             const LifParams& p) {
    const long long n = spk_neuron_index();
    if (n >= N) return;
    float carry = gv_last != nullptr ? gv_last[n] : 0.0f;
    for (int t = T - 1; t >= 0; --t) {
        const long long i = t * N + n;
        float g;
        lif_backward_step(h_seq[i], spk_load(gs, i), &carry, &g, p);
        spk_store(gx, i, g);
    }
    gv0[n] = carry;
}

#define SPIKEMOE_LIF_KERNELS(SUFFIX, S)                                                       \
    extern "C" __global__ void __launch_bounds__(SPIKEMOE_MAX_BLOCK) lif_fwd_##SUFFIX(        \
        const S* __restrict__ x, const float* __restrict__ v0, S* __restrict__ spike,         \
        float* __restrict__ h_seq, float* __restrict__ v_last, long long N, int T, float tau, \
        float v_th, float v_reset, float alpha, int flags) {                                  \
        lif_forward<S>(x, v0, spike, h_seq, v_last, N, T,                                     \
                       lif_params(tau, v_th, v_reset, alpha, flags));                         \
    }                                                                                         \
    extern "C" __global__ void __launch_bounds__(SPIKEMOE_MAX_BLOCK) lif_bwd_##SUFFIX(        \
        const S* __restrict__ gs, const float* __restrict__ gv_last,                          \
        const float* __restrict__ h_seq, S* __restrict__ gx, float* __restrict__ gv0,         \
        long long N, int T, float tau, float v_th, float v_reset, float alpha, int flags) {   \
        lif_backward<S>(gs, gv_last, h_seq, gx, gv0, N, T,                                    \
                        lif_params(tau, v_th, v_reset, alpha, flags));                        \
    }

SPIKEMOE_LIF_KERNELS(f32, float)
SPIKEMOE_LIF_KERNELS(f16, spk_f16)
SPIKEMOE_LIF_KERNELS(bf16, spk_bf16)
