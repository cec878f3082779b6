// CPU shim: lets the CUDA kernel sources of this folder compile with g++ for verification
// (and for the optional CPU backend). Included only by the CPU build, before any kernel
// source; nvcc and NVRTC never see it.
//
// What it maps:
//   __global__, __device__, __forceinline__, __launch_bounds__   -> plain C++ functions
//   blockIdx, threadIdx, blockDim, gridDim                       -> thread-local variables that
//                                                                    the launcher below loops over
//   __uint_as_float / __float_as_uint                             -> memcpy bit casts
//   atomicAdd(float*, float)                                      -> an OpenMP atomic add
//   half <-> float                                                -> GCC's _Float16 (IEEE, RNE)
// A kernel `k` gets a C-linkage variable `k_cpu_launch` holding the address of
//   void launch(unsigned grid, unsigned block, <k's parameters...>)
// which runs every (block, thread) of the grid, blocks in parallel under OpenMP.
#pragma once
#define SPIKEMOE_CPU 1

#include <cmath>
#include <cstring>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct spikemoe_dim3 {
    unsigned int x = 0, y = 0, z = 0;
};
static thread_local spikemoe_dim3 blockIdx, threadIdx, blockDim, gridDim;

inline float __uint_as_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

inline float spikemoe_cpu_f16_to_f32(unsigned short bits) {
    _Float16 h;
    std::memcpy(&h, &bits, sizeof h);
    return static_cast<float>(h);
}

inline unsigned short spikemoe_cpu_f32_to_f16(float f) {
    const _Float16 h = static_cast<_Float16>(f);  // round to nearest even, like cvt.rn.f16.f32
    unsigned short bits;
    std::memcpy(&bits, &h, sizeof bits);
    return bits;
}

inline float atomicAdd(float* address, float value) {
    float old;
#pragma omp atomic capture
    {
        old = *address;
        *address += value;
    }
    return old;
}

template <typename F>
struct SpikemoeCpuLaunch;

template <typename... A>
struct SpikemoeCpuLaunch<void (*)(A...)> {
    template <void (*K)(A...)>
    static void run(unsigned int grid, unsigned int block, A... args) {
#pragma omp parallel for schedule(static)
        for (long long b = 0; b < static_cast<long long>(grid); ++b) {
            gridDim.x = grid;
            blockDim.x = block;
            blockIdx.x = static_cast<unsigned int>(b);
            for (unsigned int t = 0; t < block; ++t) {
                threadIdx.x = t;
                K(args...);
            }
        }
    }
};

#define SPIKEMOE_CPU_EXPORT(kernel)                                                     \
    extern "C" decltype(&SpikemoeCpuLaunch<decltype(&kernel)>::run<&kernel>)           \
        const kernel##_cpu_launch = &SpikemoeCpuLaunch<decltype(&kernel)>::run<&kernel>;
