// `herdguard simulate`: a stampede across several processes against real
// servers, in one of two shapes:
//  * herd mode (no --duration): each of `processes` workers arms
//    `concurrency` threads and all are released at the same moment on one
//    expired hot key; the report says what the database saw.
//  * scenario mode (--duration S): K keys with Zipf popularity, an open-loop
//    rate or closed-loop concurrency, TTLs with jitter, and faults on a
//    timeline; a progress line, a table or JSON with a per-second timeline,
//    an SVG chart, and --compare against no protection.
#pragma once

#include "scenario.h"

namespace herdguard::cli {

// Runs the simulation and prints the report. Returns the exit code: 0 when
// the run completed (whatever its errors), 1 when it could not be set up.
int run_simulate(const Scenario& scenario);

}  // namespace herdguard::cli
