// Whole-buffer reads and writes on pipes between the simulator's processes,
// retrying on EINTR and short transfers.
#pragma once

#include <string>

namespace herdguard::cli {

// Writes all of `data`; false when the descriptor failed or closed.
bool write_all(int fd, const std::string& data);
// Reads until EOF (or an error) and returns what arrived.
std::string read_all(int fd);

}  // namespace herdguard::cli
