/* ARM kernels (armhf with NEON, aarch64). On 32-bit ARM the NEON code is compiled through a
 * target pragma so the rest of the core still runs on a CPU without NEON. */
#if defined(__arm__) || defined(__aarch64__)
#include <string.h>

#include "salsa.h"
#include "scrypt_core.h"

#define CAT2(a, b) a##b
#define ROW_CAT(a, b) CAT2(a, b)
#define LANE_CAT(a, b) CAT2(a, b)

#if defined(__arm__)
#pragma GCC push_options
#pragma GCC target("fpu=neon")
#endif
#define ROW_FN romix_row_neon
#include "romix_row.h"
#undef ROW_FN
#define LANES 4
#define LANE_FN romix_lanes_neon
#include "romix_lanes.h"
#undef LANE_FN
#undef LANES
#if defined(__arm__)
#pragma GCC pop_options
#endif

#else
typedef int romix_arm_unused;
#endif
