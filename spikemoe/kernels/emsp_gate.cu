// EMSP channel gate, fused: Y = LIF(G_pre) (.) Z2 (SEMM, Zhou et al. 2024; lif_core.cuh).
// G_pre, Z2, Y: [T, N], elementwise.
//
//   emsp_gate_fwd_<S>(g [T,N], z [T,N], v0 [N], y [T,N], spike [T,N] or null,
//                     h [T,N] or null, v_last [N], N, T, params)
//   emsp_gate_bwd_<S>(gy [T,N], z [T,N], gv_last [N] or null, h [T,N], gg [T,N], gz [T,N],
//                     gv0 [N], N, T, params)
// Backward: gS = gY Z2, gZ2 = gY S. `spike` (the gate G itself) is written only when asked
// for (router statistics); autograd keeps h (4 bytes per element) and Z2, never G.
#include "lif_core.cuh"

template <typename S>
__device__ __forceinline__ void emsp_gate_forward(const S* __restrict__ g, const S* __restrict__ z,
                                                  const float* __restrict__ v0, S* __restrict__ y,
                                                  S* __restrict__ spike, float* __restrict__ h_seq,
                                                  float* __restrict__ v_last, long long N, int T,
                                                  const LifParams& p) {
    const long long n = spk_neuron_index();
    if (n >= N) return;
    float v = v0[n];
    for (int t = 0; t < T; ++t) {
        const long long i = t * N + n;
        const float h = lif_charge(v, spk_load(g, i), p);
        const bool fired = h >= p.v_th;
        spk_store(y, i, fired ? spk_load(z, i) : 0.0f);  // S (.) Z2
        if (spike != nullptr) spk_store(spike, i, fired ? 1.0f : 0.0f);
        if (h_seq != nullptr) h_seq[i] = h;
        v = lif_after_spike(h, fired, p);
    }
    v_last[n] = v;
}

template <typename S>
__device__ __forceinline__ void emsp_gate_backward(
    const S* __restrict__ gy, const S* __restrict__ z, const float* __restrict__ gv_last,
    const float* __restrict__ h_seq, S* __restrict__ gg, S* __restrict__ gz,
    float* __restrict__ gv0, long long N, int T, const LifParams& p) {
    const long long n = spk_neuron_index();
    if (n >= N) return;
    float carry = gv_last != nullptr ? gv_last[n] : 0.0f;
    for (int t = T - 1; t >= 0; --t) {
        const long long i = t * N + n;
        const float h = h_seq[i], g_y = spk_load(gy, i);
        spk_store(gz, i, h >= p.v_th ? g_y : 0.0f);  // gZ2 = gY S
        float g;
        lif_backward_step(h, g_y * spk_load(z, i), &carry, &g, p);
        spk_store(gg, i, g);
    }
    gv0[n] = carry;
}

#define SPIKEMOE_EMSP_KERNELS(SUFFIX, S)                                                        \
    extern "C" __global__ void __launch_bounds__(SPIKEMOE_MAX_BLOCK) emsp_gate_fwd_##SUFFIX(    \
        const S* __restrict__ g, const S* __restrict__ z, const float* __restrict__ v0,         \
        S* __restrict__ y, S* __restrict__ spike, float* __restrict__ h_seq,                    \
        float* __restrict__ v_last, long long N, int T, float tau, float v_th, float v_reset,   \
        float alpha, int flags) {                                                               \
        emsp_gate_forward<S>(g, z, v0, y, spike, h_seq, v_last, N, T,                           \
                             lif_params(tau, v_th, v_reset, alpha, flags));                     \
    }                                                                                           \
    extern "C" __global__ void __launch_bounds__(SPIKEMOE_MAX_BLOCK) emsp_gate_bwd_##SUFFIX(    \
        const S* __restrict__ gy, const S* __restrict__ z, const float* __restrict__ gv_last,   \
        const float* __restrict__ h_seq, S* __restrict__ gg, S* __restrict__ gz,                \
        float* __restrict__ gv0, long long N, int T, float tau, float v_th, float v_reset,      \
        float alpha, int flags) {                                                               \
        emsp_gate_backward<S>(gy, z, gv_last, h_seq, gg, gz, gv0, N, T,                         \
                              lif_params(tau, v_th, v_reset, alpha, flags));                    \
    }

SPIKEMOE_EMSP_KERNELS(f32, float)
SPIKEMOE_EMSP_KERNELS(f16, spk_f16)
SPIKEMOE_EMSP_KERNELS(bf16, spk_bf16)
