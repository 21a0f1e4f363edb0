#include "model/model_config.h"

namespace eco {

int ModelConfig::hidden() const {
  if (mlp_hidden > 0) return mlp_hidden;
  if (arch == Arch::GPT2) return 4 * d_model;
  // SwiGLU has three matrices instead of two, so 8d/3 keeps the MLP's parameter count at 8d²;
  // rounding up to 256 keeps the GEMM dimensions friendly to vector units and tensor cores.
  const int raw = (8 * d_model + 2) / 3;
  return (raw + 255) / 256 * 256;
}

int ModelConfig::moe_layer_count() const {
  int n = 0;
  for (int l = 0; l < n_layer; ++l) n += moe.is_moe_layer(l) ? 1 : 0;
  return n;
}

}  // namespace eco
