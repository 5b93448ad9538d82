/*
 * cpu.c: run-time CPU feature detection and the choice of kernel path.
 * Build flags never decide which path runs: every path compiled in is
 * checked against the CPU before it is used.
 */
#include <string.h>

#include "config.h"
#include "core/internal.h"

#if defined(TERN_HAVE_X86)
#include <cpuid.h>

/* F16C by CPUID leaf 1, ECX bit 29: clang 14's __builtin_cpu_supports does
 * not know "f16c". */
static bool has_f16c(void)
{
	unsigned a, b, c, d;
	return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}
#endif

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

static const char *const path_names[TERN_KERNEL_COUNT] = { "scalar", "avx2", "avx512", "neon" };

const char *tern_kernel_path_name(tern_kernel_path p)
{
	if ((int)p < 0 || p >= TERN_KERNEL_COUNT)
		return "unknown";
	return path_names[p];
}

static bool cpu_has(tern_kernel_path p)
{
	switch (p) {
	case TERN_KERNEL_SCALAR:
		return true;
#if defined(TERN_HAVE_X86)
	case TERN_KERNEL_AVX2:
		__builtin_cpu_init();
		return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
	case TERN_KERNEL_AVX512:
		__builtin_cpu_init();
		return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
		       __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
		       __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx2") &&
		       __builtin_cpu_supports("fma") && has_f16c();
#endif
#if defined(TERN_HAVE_ARM)
	case TERN_KERNEL_NEON:
#if defined(__linux__)
		return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
		return false;
#endif
#endif
	default:
		return false;
	}
}

const tern_kernels *tern_kernels_get(tern_kernel_path p)
{
	if (!cpu_has(p))
		return NULL;
	switch (p) {
	case TERN_KERNEL_SCALAR: return tern_kernels_scalar();
#if defined(TERN_HAVE_X86)
	case TERN_KERNEL_AVX2: return tern_kernels_avx2();
	case TERN_KERNEL_AVX512: return tern_kernels_avx512(__builtin_cpu_supports("avx512vbmi"));
#endif
#if defined(TERN_HAVE_ARM)
	case TERN_KERNEL_NEON: return tern_kernels_neon();
#endif
	default: return NULL;
	}
}

bool tern_kernel_available(tern_kernel_path p)
{
	return tern_kernels_get(p) != NULL;
}

tern_kernel_path tern_kernel_detect(void)
{
	static const tern_kernel_path order[] = { TERN_KERNEL_AVX512, TERN_KERNEL_NEON,
						  TERN_KERNEL_AVX2 };
	for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
		if (tern_kernel_available(order[i]))
			return order[i];
	return TERN_KERNEL_SCALAR;
}
