#include "optim/moment_buffer.h"

namespace eco {

MomentBuffer::MomentBuffer(size_t n, StateFormat format) : format_(format) {
  if (format == StateFormat::Fp32) f32_.assign(n, 0.0f);
  else b16_.assign(n, 0);  // bf16 code 0 is +0
}

}  // namespace eco
