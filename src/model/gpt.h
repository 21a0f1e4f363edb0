#pragma once
// The dense GPT: GPT-2 (llm.c layout: learned positions, LayerNorm, GELU(tanh), biases, tied head)
// or Llama-style (RMSNorm, RoPE, SwiGLU, no biases, tied or untied head), orchestrated over the
// ops interface. All parameters live in one buffer with named views; gradients mirror it;
// activations are one buffer sized up front for the largest (B, T) seen.
#include <cstdint>
#include <string>
#include <vector>

#include "model/model_config.h"
#include "model/ops.h"

namespace eco {

// What a parameter tensor is for; the FP8 work quantizes the Linear ones.
enum class ParamKind {
  Linear,     // a linear weight inside a transformer block: QKV, attention out, MLP in (/gate|up), MLP out
  Embedding,  // token (and position) embedding; also the head when tied
  Head,       // untied LM head
  Norm,       // LayerNorm/RMSNorm weight and LayerNorm bias
  Bias,       // bias of a block linear (GPT-2)
};
const char* param_kind_name(ParamKind k);

struct ParamTensor {
  std::string name;            // e.g. "wte", "h.3.qkv.w", "lnf.b"
  std::vector<int64_t> shape;  // row-major; linear weights are [out, in]
  size_t offset = 0;           // in floats, into params() / grads()
  size_t numel = 0;
  ParamKind kind = ParamKind::Linear;
  bool weight_decay = false;   // 2-D tensors decay (as llm.c), norms and biases do not
};

class GPT {
 public:
  // Allocates parameters and gradients through `ops` (which must outlive the model). Weights are
  // uninitialised until init_weights() or an import.
  GPT(const ModelConfig& cfg, Ops& ops);
  ~GPT();
  GPT(const GPT&) = delete;
  GPT& operator=(const GPT&) = delete;

  const ModelConfig& config() const { return cfg_; }
  const std::vector<ParamTensor>& tensors() const { return tensors_; }
  const ParamTensor& tensor(const std::string& name) const;  // throws eco::Error if there is none
  size_t num_params() const { return num_params_; }
  float* params() { return params_; }
  float* grads() { return grads_; }
  const float* params() const { return params_; }
  const float* grads() const { return grads_; }

  // Host copies of the whole parameter buffer (num_params() floats), whatever the backend.
  void download_params(float* host) const;
  void upload_params(const float* host);

  // Normal(0, init_std) weights (residual projections init_std/sqrt(2L)), norms 1, biases 0,
  // padded vocabulary rows 0. Deterministic in `seed`, and each tensor has its own stream.
  void init_weights(uint64_t seed);

  // Runs the model on inputs[B,T] (token ids < vocab_size). With targets, returns the mean
  // cross-entropy and prepares backward(); with targets == nullptr computes logits only and
  // returns NaN. Activations grow to the largest B and T seen.
  float forward(const int32_t* inputs, const int32_t* targets, int B, int T);
  // (B, T, padded_vocab) logits of the last forward; backward() overwrites them with their gradient.
  const float* logits() const { return acts_.logits; }

  void zero_grad();
  // grads += d(loss_scale · mean loss)/dθ for the last forward (with targets).
  void backward(float loss_scale = 1.0f);

  // Bytes of activations (forward saves + backward scratch) at this B, T.
  size_t activation_bytes(int B, int T) const;
  // Parameter counts (total and without embeddings/head) and the shape.
  std::string summary() const;
  size_t num_non_embedding_params() const;

 private:
  enum class LinearSlot { Qkv, AttnOut, MlpIn, MlpOut };
  // Pointers of every activation tensor for (B, T), laid out from `base` (nullptr: sizes only).
  struct ActPointers {
    float* encoded = nullptr;
    float* lnf = nullptr;
    float* lnf_mean = nullptr;
    float* lnf_rstd = nullptr;
    float* logits = nullptr;
    float* losses = nullptr;
    float* lse = nullptr;
    struct Layer {
      float *ln1, *ln1_mean, *ln1_rstd, *qkv, *atty, *att, *attproj, *res2, *ln2, *ln2_mean, *ln2_rstd, *fch,
          *fch_act, *fcproj, *res3;
    };
    std::vector<Layer> layers;
    // Backward scratch (one of each, reused by every layer).
    float *dres, *dln, *dqkv, *datty, *dfch, *dfch_act;
    int32_t* tokens = nullptr;
    int32_t* targets = nullptr;
    size_t total_bytes = 0;
  };
  ActPointers lay_out_activations(char* base, int B, int T) const;
  void ensure_activations(int B, int T);
  void build_layout();

  // THE place every block linear reads its weight: the FP8 work substitutes dequantized weights here.
  const float* linear_weight(int layer, LinearSlot slot) const;
  // THE place activations enter a block linear's forward: the FP8 work quantizes rows to E4M3 here.
  const float* linear_input(const float* inp, int rows, int cols);
  size_t linear_weight_offset(int layer, LinearSlot slot) const;  // into params_ / grads_
  float* linear_weight_grad(int layer, LinearSlot slot);
  const float* linear_bias(int layer, LinearSlot slot) const;
  float* linear_bias_grad(int layer, LinearSlot slot);
  struct LinearDims {
    int in, out;
  };
  LinearDims linear_dims(LinearSlot slot) const;
  void linear_forward(float* out, const float* inp, int layer, LinearSlot slot, int N);
  void linear_backward(float* dinp, const float* dout, const float* inp, int layer, LinearSlot slot, int N);
  void norm_forward(float* out, float* mean, float* rstd, const float* inp, size_t w_off, size_t b_off, int N);
  void norm_backward(float* dinp, const float* dout, const float* inp, const float* mean, const float* rstd,
                     size_t w_off, size_t b_off, int N);
  size_t head_offset() const;  // wte when tied

  ModelConfig cfg_;
  Ops& ops_;
  std::vector<ParamTensor> tensors_;
  std::vector<float> init_std_;  // per tensor: > 0 normal(0, std); 0 zeros; < 0 ones
  size_t num_params_ = 0;
  float* params_ = nullptr;
  float* grads_ = nullptr;
  // Offsets (floats) of the stacked [L, ...] views; npos where the architecture has none.
  struct Views {
    size_t wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb,
        head;
  } v_{};
  float* rope_cos_ = nullptr;  // [max_seq_len, head_dim/2] (llama)
  float* rope_sin_ = nullptr;

  char* act_buffer_ = nullptr;
  int act_B_ = 0, act_T_ = 0;  // the buffer's capacity
  ActPointers acts_;
  int last_B_ = 0, last_T_ = 0;
  bool backward_ready_ = false;  // a forward with targets ran and backward() has not consumed it
};

}  // namespace eco
