// Emulation stub: __nv_bfloat16 is c10::BFloat16 (same 16-bit layout).
#pragma once
#include <c10/util/BFloat16.h>
#include "cuda_runtime.h"
using __nv_bfloat16 = c10::BFloat16;
