/* x86-64 kernels: each include of a template is compiled for one instruction set through a
 * target pragma, and backends.c picks among them at run time by CPU features. */
#if defined(__x86_64__)
#include <string.h>

#include "salsa.h"
#include "scrypt_core.h"

#define CAT2(a, b) a##b
#define ROW_CAT(a, b) CAT2(a, b)
#define LANE_CAT(a, b) CAT2(a, b)

/* SSE2 is the x86-64 baseline: no pragma needed. */
#define ROW_FN romix_row_sse2
#include "romix_row.h"
#undef ROW_FN

#define LANES 4
#define LANE_FN romix_lanes_sse2
#include "romix_lanes.h"
#undef LANE_FN
#undef LANES

#pragma GCC push_options
#pragma GCC target("avx2")
#define LANES 8
#define LANE_FN romix_lanes_avx2
#include "romix_lanes.h"
#undef LANE_FN
#undef LANES
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl")
#define ROW_FN romix_row_avx512
#include "romix_row.h"
#undef ROW_FN
#define LANES 16
#define LANE_FN romix_lanes_avx512
#include "romix_lanes.h"
#undef LANE_FN
#undef LANES
#pragma GCC pop_options

#else
typedef int romix_x86_unused; /* ISO C wants a declaration in every file */
#endif
