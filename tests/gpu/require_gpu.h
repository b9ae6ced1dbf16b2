#pragma once
// Skips the calling test, saying why, where no CUDA device is usable (GPU tests run everywhere;
// they only pass or fail on a machine with a GPU).
#include <gtest/gtest.h>

#include "ctcal/error.h"
#include "ctcal/model/cuda_backend.h"

#define CTCAL_REQUIRE_GPU()                                   \
  do {                                                        \
    try {                                                     \
      ::ctcal::cuda_device_description(0);                    \
    } catch (const ::ctcal::Error& e) {                       \
      GTEST_SKIP() << "no GPU: " << e.what();                 \
    }                                                         \
  } while (0)
