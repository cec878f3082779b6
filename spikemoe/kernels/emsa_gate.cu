// EMSA expert gate, fused: Y = R (.) LIF_vth(O) (SEMM, Zhou et al. 2024; lif_core.cuh).
// O is [T, N] with N = M * D (M = tokens x experts, D = expert width), R is [T, M] and
// broadcasts over the D channels of its expert: Y[t, n] = R[t, n / D] S[t, n].
//
//   emsa_gate_fwd_<S>(o [T,N], r [T,M], v0 [N], y [T,N], spike [T,N] or null,
//                     h [T,N] or null, v_last [N], N, T, D, params)
//   emsa_gate_bwd_<S>(gy [T,N], r [T,M], gv_last [N] or null, h [T,N], go [T,N],
//                     gr [T,M] float32 zero-filled, gv0 [N], N, T, D, params)
// Backward: gS = gY R; gR[t, m] = sum_d gY[t, m D + d] S[t, m D + d] (float32 atomic adds,
// so the summation order, and the last bits of gR, may vary between GPU runs).
// `spike` (the expert neuron's own output) is written only when asked for (measurement).
// Saved for the backward: h (4 bytes per element); R and the spikes are not stored again.
#include "lif_core.cuh"

template <typename S>
__device__ __forceinline__ void emsa_gate_forward(const S* __restrict__ o, const S* __restrict__ r,
                                                  const float* __restrict__ v0, S* __restrict__ y,
                                                  S* __restrict__ spike, float* __restrict__ h_seq,
                                                  float* __restrict__ v_last, long long N, int T,
                                                  long long D, const LifParams& p) {
    const long long n = spk_neuron_index();
    if (n >= N) return;
    const long long M = N / D, m = n / D;
    float v = v0[n];
    for (int t = 0; t < T; ++t) {
        const long long i = t * N + n;
        const float h = lif_charge(v, spk_load(o, i), p);
        const bool fired = h >= p.v_th;
        spk_store(y, i, fired ? spk_load(r, t * M + m) : 0.0f);  // R (.) S
        if (spike != nullptr) spk_store(spike, i, fired ? 1.0f : 0.0f);
        if (h_seq != nullptr) h_seq[i] = h;
        v = lif_after_spike(h, fired, p);
    }
    v_last[n] = v;
}

template <typename S>
__device__ __forceinline__ void emsa_gate_backward(
    const S* __restrict__ gy, const S* __restrict__ r, const float* __restrict__ gv_last,
    const float* __restrict__ h_seq, S* __restrict__ go, float* __restrict__ gr,
    float* __restrict__ gv0, long long N, int T, long long D, const LifParams& p) {
    const long long n = spk_neuron_index();
    if (n >= N) return;
    const long long M = N / D, m = n / D;
    float carry = gv_last != nullptr ? gv_last[n] : 0.0f;
    for (int t = T - 1; t >= 0; --t) {
        const long long i = t * N + n;
        const float h = h_seq[i], g_y = spk_load(gy, i);
        if (h >= p.v_th && g_y != 0.0f) atomicAdd(gr + t * M + m, g_y);  // gR += gY S
        float g;
        lif_backward_step(h, g_y * spk_load(r, t * M + m), &carry, &g, p);
        spk_store(go, i, g);
    }
    gv0[n] = carry;
}

#define SPIKEMOE_EMSA_KERNELS(SUFFIX, S)                                                        \
    extern "C" __global__ void __launch_bounds__(SPIKEMOE_MAX_BLOCK) emsa_gate_fwd_##SUFFIX(    \
        const S* __restrict__ o, const S* __restrict__ r, const float* __restrict__ v0,         \
        S* __restrict__ y, S* __restrict__ spike, float* __restrict__ h_seq,                    \
        float* __restrict__ v_last, long long N, int T, long long D, float tau, float v_th,     \
        float v_reset, float alpha, int flags) {                                                \
        emsa_gate_forward<S>(o, r, v0, y, spike, h_seq, v_last, N, T, D,                        \
                             lif_params(tau, v_th, v_reset, alpha, flags));                     \
    }                                                                                           \
    extern "C" __global__ void __launch_bounds__(SPIKEMOE_MAX_BLOCK) emsa_gate_bwd_##SUFFIX(    \
        const S* __restrict__ gy, const S* __restrict__ r, const float* __restrict__ gv_last,   \
        const float* __restrict__ h_seq, S* __restrict__ go, float* __restrict__ gr,            \
        float* __restrict__ gv0, long long N, int T, long long D, float tau, float v_th,        \
        float v_reset, float alpha, int flags) {                                                \
        emsa_gate_backward<S>(gy, r, gv_last, h_seq, go, gr, gv0, N, T, D,                      \
                              lif_params(tau, v_th, v_reset, alpha, flags));                    \
    }

SPIKEMOE_EMSA_KERNELS(f32, float)
SPIKEMOE_EMSA_KERNELS(f16, spk_f16)
SPIKEMOE_EMSA_KERNELS(bf16, spk_bf16)
