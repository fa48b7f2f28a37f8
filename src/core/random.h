// Internal: fast per-thread pseudo-random numbers for jitter and sampling.
// Not for secrets (lock tokens use the OS CSPRNG instead).
#pragma once

#include <cstdint>
#include <random>

namespace herdguard::internal {

// A per-thread generator seeded once from std::random_device, so concurrent
// callers never share (or lock) one engine.
std::mt19937_64& thread_rng();

// Uniform double in [lo, hi).
double uniform_real(double lo, double hi);

}  // namespace herdguard::internal
