#pragma once
// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): the checksum of checkpoint files.
// Chosen over plain CRC-32 because x86 has an instruction for it (SSE4.2 crc32), so verifying a
// multi-GB checkpoint costs about as much as reading it.
#include <cstddef>
#include <cstdint>

namespace eco {

// Checksum of `bytes` bytes, continuing from `prev` (the value returned for the preceding data;
// 0 to start): crc32c(b, n2, crc32c(a, n1)) == crc32c of a followed by b. crc32c("123456789") = 0xE3069283.
uint32_t crc32c(const void* data, size_t bytes, uint32_t prev = 0);

// The table-driven path on every CPU (exposed so tests can compare it with the hardware path).
uint32_t crc32c_portable(const void* data, size_t bytes, uint32_t prev = 0);

}  // namespace eco
