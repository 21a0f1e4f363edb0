#pragma once
// The GPT: GPT-2 (llm.c layout: learned positions, LayerNorm, GELU(tanh), biases, tied head) or
// Llama-style (RMSNorm, RoPE, SwiGLU, no biases, tied or untied head), optionally with sparse MoE
// layers (ModelConfig::moe: a router and E expert MLPs instead of the dense MLP), orchestrated over
// the ops interface. All parameters live in one buffer of named tensors; gradients mirror it;
// activations are one buffer sized up front for the largest (B, T) seen.
//
// For the FP8 work the block linears can read their weights from elsewhere (a LinearWeightSource:
// the optimizer's dequantized stored copies), and their GEMM operands can be fake-quantized
// per row (activations in the forward, output gradients in the backward).
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "model/expert_exchange.h"
#include "model/model_config.h"
#include "model/ops.h"
#include "quant/quant_format.h"

namespace eco {

// What a parameter tensor is for; the FP8 work quantizes the Linear ones.
enum class ParamKind {
  Linear,     // a linear weight inside a transformer block: QKV, attention out, MLP in (/gate|up), MLP out
  Expert,     // a linear weight of an MoE expert (first or second matrix)
  Router,     // an MoE router [E, C]: fp32 always (it is not a GEMM operand worth quantizing)
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
  bool weight_decay = false;   // 2-D tensors decay (as llm.c), norms, biases and routers do not
  // Stored quantized in the FP8 / BF16 weight modes: every block linear of a dense model; the
  // experts of an MoE model (and its other block linears with moe.quantize_dense_linears).
  bool quantizable = false;
  // Index of this tensor in the layout of the whole model (GptOptions::expert_ranks = 1): the same
  // on every rank, so it keys stochastic rounding and orders checkpoints whatever the expert split.
  size_t global_index = 0;
  int expert = -1;  // ParamKind::Expert: the expert's index among the layer's moe.experts
};

// The load-balancing picture of the MoE layers over the micro-batches since reset_moe_totals():
// per MoE layer (in layer order) routed[E], kept[E] (assignments each expert received before and
// after capacity drops), prob_sum[E] (Σ over tokens of the router probability), z_sum (Σ lse²)
// and tokens. Plain doubles in one vector, so data-parallel ranks can sum them with one all-reduce.
struct MoeTotals {
  int experts = 0;
  std::vector<double> values;
  size_t layer_stride() const { return 3 * static_cast<size_t>(experts) + 2; }
  size_t layers() const { return experts > 0 ? values.size() / layer_stride() : 0; }
};

struct MoeLayerStats {
  int layer = 0;              // transformer block index
  double aux_loss = 0.0;      // Switch loss α·E·Σ f_e·P_e over the totals' tokens (α = aux_loss_coef)
  double z_loss = 0.0;        // z_loss_coef · mean lse²
  double load_min = 0.0;      // routed share of the least / most loaded expert × E (1 = balanced)
  double load_max = 0.0;
  double load_entropy = 0.0;  // entropy of the routed shares / log E (1 = balanced)
  double dropped_fraction = 0.0;
};

// Supplies the values the forward/backward use for a quantizable weight (ParamTensor::quantizable)
// when the model does not own them, or when the forward must use a quantized copy of a master.
class LinearWeightSource {
 public:
  virtual ~LinearWeightSource() = default;
  // Writes the tensor's [out, in] values (e.g. dequantized FP8 codes × scales) to `out`, a buffer
  // of the model's backend holding numel floats. tensor_index indexes GPT::tensors().
  virtual void linear_weight_values(size_t tensor_index, float* out) const = 0;
  // The stored quantized copy itself (codes + scales in backend memory), for the forward's
  // quantized GEMM; nullptr when the source holds plain fp32 values.
  virtual const QuantRef* linear_weight_quant(size_t tensor_index) const {
    (void)tensor_index;
    return nullptr;
  }
};

struct GptOptions {
  // false: the model owns fp32 values of every tensor (params() covers all of them).
  // true: the quantizable tensors have no room in params(): the layout puts them after all the
  //   others, params() holds only resident_param_count() floats, and every read of their weights
  //   goes to the LinearWeightSource (which must be set before forward). grads() still covers all
  //   tensors, at tensors()[i].offset.
  bool external_linear_weights = false;
  // Expert parallelism (DESIGN.md §6, docs/moe.md): this model holds, of every MoE layer, only the
  // experts [expert_rank·E/expert_ranks, (expert_rank+1)·E/expert_ranks); the tokens routed to the
  // others travel through the ExpertExchange (set_expert_exchange) to the ranks that hold them.
  // expert_ranks must divide moe.experts. The expert tensors always come last in the flat layout
  // (grads() from expert_param_begin() on), so their gradients can be summed over other ranks.
  int expert_rank = 0;
  int expert_ranks = 1;
};

class GPT {
 public:
  // Allocates parameters and gradients through `ops` (which must outlive the model). Weights are
  // uninitialised until init_weights() or an import.
  GPT(const ModelConfig& cfg, Ops& ops, GptOptions options = {});
  ~GPT();
  GPT(const GPT&) = delete;
  GPT& operator=(const GPT&) = delete;

  const ModelConfig& config() const { return cfg_; }
  const std::vector<ParamTensor>& tensors() const { return tensors_; }
  const ParamTensor& tensor(const std::string& name) const;  // throws eco::Error if there is none
  const GptOptions& options() const { return options_; }
  // Where the expert tensors begin in the flat layout (num_params() for a dense model): grads()
  // [expert_param_begin(), num_params()) are this rank's experts, the rest every rank's tensors.
  size_t expert_param_begin() const { return expert_begin_; }
  // Expert parallelism: the exchange to the peers holding the other experts; required before the
  // first forward when options().expert_ranks > 1 (its size must equal it), must outlive its use.
  void set_expert_exchange(ExpertExchange* exchange);
  // Floats of every tensor (what grads() holds).
  size_t num_params() const { return num_params_; }
  // Floats actually allocated for params(): num_params() unless the linear weights are external.
  size_t resident_param_count() const { return resident_params_; }
  // params() holds resident_param_count() floats; a tensor lives there iff its offset is below it.
  float* params() { return params_; }
  float* grads() { return grads_; }
  const float* params() const { return params_; }
  const float* grads() const { return grads_; }

  // Host copies of the resident parameter buffer (resident_param_count() floats), whatever the backend.
  void download_params(float* host) const;
  void upload_params(const float* host);

  // Normal(0, init_std) weights (residual projections init_std/sqrt(2L)), norms 1, biases 0,
  // padded vocabulary rows 0. Deterministic in `seed`, and each tensor has its own stream.
  // With external linear weights only the resident tensors are written.
  void init_weights(uint64_t seed);
  // The exact values init_weights(seed) gives tensor `tensor_index` (numel floats to host_out):
  // how the owner of external weights initialises them.
  void init_tensor_values(size_t tensor_index, uint64_t seed, float* host_out) const;

  // Where the block linears read their weights: nullptr = params() (not allowed with external
  // linear weights). The source must outlive its use; it is asked once per GEMM.
  void set_linear_weight_source(const LinearWeightSource* source);
  const LinearWeightSource* linear_weight_source() const { return weight_source_; }

  // Fake quantization of the quantizable linears' GEMM operands, one absmax scale per row, RTN.
  struct LinearQuantization {
    QuantFormat act_format = QuantFormat::E4M3;  // forward inputs (BF16 for the bf16 modes)
    bool quantize_activations = false;
    // Backward: output gradients to E5M2 before both GEMMs (the "FP8 backward" switch). The
    // residual stream's own gradient is untouched; only the copy fed to the GEMMs is quantized.
    bool quantize_output_grads = false;
  };
  // Takes effect at the next forward (a pending backward is cancelled: it must see the same setting).
  void set_linear_quantization(const LinearQuantization& q);
  const LinearQuantization& linear_quantization() const { return quant_; }

  // Runs the model on inputs[B,T] (token ids < vocab_size). With targets, returns the mean
  // cross-entropy and prepares backward(); with targets == nullptr computes logits only and
  // returns NaN. Activations grow to the largest B and T seen.
  float forward(const int32_t* inputs, const int32_t* targets, int B, int T);
  // The same forward without a host sync: adds the mean loss (as forward() would return it, in
  // double) to *loss_acc, a backend double (the trainer reads its step scalars once).
  void forward_accumulate_loss(const int32_t* inputs, const int32_t* targets, int B, int T, double* loss_acc);
  // (B, T, padded_vocab) logits of the last forward; backward() overwrites them with their gradient.
  const float* logits() const { return acts_.logits; }  // backend memory
  // Row `row` (b*T+t) of the last forward's logits, padded_vocab floats, copied to host memory.
  void copy_logits_row(size_t row, float* host_out) const {
    ops_.copy_to_host(host_out, acts_.logits + row * static_cast<size_t>(cfg_.padded_vocab),
                      static_cast<size_t>(cfg_.padded_vocab) * sizeof(float));
  }

  void zero_grad();
  // grads += d(loss_scale · mean loss)/dθ for the last forward (with targets).
  void backward(float loss_scale = 1.0f);

  // ---- MoE (all no-ops for a dense model) ----
  void reset_moe_totals();
  // One small backend read (the router masses and z sums); the counts are on the host already.
  MoeTotals read_moe_totals() const;
  static std::vector<MoeLayerStats> moe_stats(const ModelConfig& cfg, const MoeTotals& totals);
  // Aux-loss-free balancing: bias[e] += rate·sign(mean routed − routed[e]) per MoE layer, from
  // totals summed over every rank (so all ranks keep the same bias). The bias changes which
  // experts are selected, never the gates.
  void update_expert_bias(const MoeTotals& totals, float rate);
  // The expert bias of every MoE layer, [moe layers, E] floats (host mirror; for checkpoints).
  const std::vector<float>& expert_bias() const { return expert_bias_host_; }
  void set_expert_bias(const std::vector<float>& bias);  // Error on a size mismatch

  // Bytes of activations (forward saves + backward scratch, including the quantized-operand and
  // external-weight scratch buffers) at this B, T.
  size_t activation_bytes(int B, int T) const;
  // The activation buffer alone for a model of this shape, without building one (memory planning).
  static size_t activation_layout_bytes(const ModelConfig& cfg, const LinearQuantization& quant, const Ops& ops, int B,
                                        int T);
  // The same with the attention's saved floats per layer given (Ops::attention_saved_floats(B, T,
  // n_head) of the backend planned for), so a plan needs no backend object.
  // expert_parallel: the layout of a model split over expert ranks (the experts' row buffers are
  // then the receiving rank's and grow with what arrives: not counted here).
  static size_t activation_layout_bytes(const ModelConfig& cfg, const LinearQuantization& quant,
                                        size_t attention_saved_floats, int B, int T, bool expert_parallel = false);
  // The parameter tensors (names, shapes, kinds, quantizable, offsets) a GPT of this shape has with
  // these options, exactly as the constructor lays them out, without allocating anything (memory
  // planning). ConfigError for a shape the constructor would refuse.
  static std::vector<ParamTensor> parameter_tensors(const ModelConfig& cfg, GptOptions options = {});
  // Bytes the constructor allocates besides params, grads and the weight scratch: the RoPE tables
  // and the MoE expert bias and router statistics.
  static size_t state_buffer_bytes(const ModelConfig& cfg);
  // Parameter counts (total and without embeddings/head) and the shape.
  std::string summary() const;
  size_t num_non_embedding_params() const;
  // Parameters one token passes through: every tensor but the experts, plus top_k experts' worth.
  size_t num_active_params() const;

 private:
  static constexpr size_t npos = static_cast<size_t>(-1);
  // tensors_ indices of one block's parameters; npos where the block has none. fc/fcproj: the
  // dense MLP, or an MoE layer's shared expert.
  struct LayerParams {
    size_t ln1w = npos, ln1b = npos, qkvw = npos, qkvb = npos, attprojw = npos, attprojb = npos, ln2w = npos,
           ln2b = npos, fcw = npos, fcb = npos, fcprojw = npos, fcprojb = npos, router = npos;
    std::vector<size_t> expert_fc, expert_proj;
    int moe_index = -1;  // index among the MoE layers, -1 for a dense layer
  };
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
      // MoE layers (nullptr otherwise): router logits/probs [N,E], lse [N], top-k [N,K], the plan,
      // and the expert rows (R = N·K at most): inputs, first GEMM, activation, output.
      float *router_logits, *router_probs, *router_lse, *gates, *moe_in, *moe_h, *moe_act, *moe_out, *shared_out;
      int32_t *expert_idx, *slot_of, *token_of, *counts;
    };
    std::vector<Layer> layers;
    // Backward scratch (one of each, reused by every layer).
    float *dres, *dln, *dqkv, *datty, *dfch, *dfch_act;
    float *dmoe_out, *dmoe_h, *dmoe_act, *dmoe_in, *dgates, *drouter, *dtmp;  // MoE layers only
    // Fake-quantized GEMM operands (only with the matching LinearQuantization switch): a linear's
    // input [N, max in] and its output gradient [N, max out].
    float* input_q = nullptr;
    float* dout_q = nullptr;
    void* operand_codes = nullptr;  // the quantized GEMM operand being made (codes; per-row scales below)
    float* operand_scales = nullptr;
    int32_t* tokens = nullptr;
    int32_t* targets = nullptr;
    size_t total_bytes = 0;
  };
  // attention_saved_floats: what the backend's attention keeps per layer at this B, T.
  static ActPointers lay_out_activations(const ModelConfig& cfg, const LinearQuantization& quant,
                                         size_t attention_saved_floats, char* base, int B, int T,
                                         bool expert_parallel);
  void ensure_activations(int B, int T);
  bool run_forward(const int32_t* inputs, const int32_t* targets, int B, int T);  // false without targets
  // The parameter layout of a shape: the tensors and where each block's live (built without a model,
  // so memory planning and the constructor share it).
  struct Layout {
    std::vector<ParamTensor> tensors;
    std::vector<float> init_std;
    std::vector<LayerParams> layers;
    size_t wte = npos, wpe = npos, lnfw = npos, lnfb = npos, head = npos;
    size_t num_params = 0, resident_params = 0, max_linear_numel = 0, expert_begin = 0;
  };
  static void check_shape(const ModelConfig& cfg);  // ConfigError for a shape no GPT can have
  static Layout build_layout(const ModelConfig& cfg, const GptOptions& options);
  static void check_expert_split(const ModelConfig& cfg, const GptOptions& options);
  static void keep_local_experts(Layout& layout, const ModelConfig& cfg, const GptOptions& options);

  float* param(size_t t) { return params_ + tensors_[t].offset; }
  const float* param(size_t t) const { return params_ + tensors_[t].offset; }
  float* grad(size_t t) { return grads_ + tensors_[t].offset; }
  const float* param_or_null(size_t t) const { return t == npos ? nullptr : param(t); }
  float* grad_or_null(size_t t) { return t == npos ? nullptr : grad(t); }
  // THE place a linear reads its weight (tensor w, [out, in]): params() or, for a quantizable
  // tensor with a source, the scratch the source fills (each call overwrites it; every use is one
  // GEMM right away).
  const float* linear_weight(size_t w) const;
  // THE place activations enter a quantizable linear's GEMMs: with quantize_activations, the rows
  // fake-quantized into input_q. Deterministic, so the backward recomputes the forward's operand
  // bit for bit instead of keeping one per layer.
  const float* linear_input(const float* inp, size_t w, int rows);
  // The output gradient the backward GEMMs consume (E5M2 rows in dout_q with quantize_output_grads).
  const float* linear_output_grad(const float* dout, size_t w, int rows);
  // rows×cols of `format` with per-row scales over the operand scratch of the activations.
  QuantRef operand_ref(int rows, int cols, QuantFormat format) const;
  int linear_in(size_t w) const { return static_cast<int>(tensors_[w].shape[1]); }
  int linear_out(size_t w) const { return static_cast<int>(tensors_[w].shape[0]); }
  // out[N, out] = inp[N, in]·Wᵀ (+ bias b, npos = none) and its backward, for tensor w.
  void linear_forward(float* out, const float* inp, size_t w, size_t b, int N);
  void linear_backward(float* dinp, const float* dout, const float* inp, size_t w, size_t b, int N);
  void norm_forward(float* out, float* mean, float* rstd, const float* inp, size_t w, size_t b, int N);
  void norm_backward(float* dinp, const float* dout, const float* inp, const float* mean, const float* rstd, size_t w,
                     size_t b, int N);
  // The two-matrix MLP (dense, shared expert or one expert) over N rows: h = inp·fcᵀ, act, out.
  void mlp_forward(float* out, float* h, float* act, const float* inp, size_t fc, size_t fcb, size_t proj,
                   size_t projb, bool swiglu, int N);
  // dinp (overwritten) from dout; dh, dact: scratch of the forward's h and act shapes.
  void mlp_backward(float* dinp, float* dh, float* dact, const float* dout, const float* inp, const float* h,
                    const float* act, size_t fc, size_t fcb, size_t proj, size_t projb, bool swiglu, int N);
  void moe_forward(int layer, int N);   // s.fcproj = the MoE block's output for s.ln2
  void moe_backward(int layer, int N);  // dln = its input gradient, from dres
  // A run of rows of one local expert (index into LayerParams::expert_fc) in an expert row buffer.
  struct ExpertBlock {
    size_t local = 0;
    int rows = 0;
    size_t first_row = 0;
  };
  // Without expert parallelism: one block per expert, in expert order (counts[e] rows each).
  std::vector<ExpertBlock> whole_model_blocks(const std::vector<int32_t>& counts) const;
  // Each block's expert MLP over its rows of in / h / act / out (and back), skipping empty blocks.
  void experts_forward(const LayerParams& p, const std::vector<ExpertBlock>& blocks, const float* in, float* h,
                       float* act, float* out);
  void experts_backward(const LayerParams& p, const std::vector<ExpertBlock>& blocks, float* din, float* dh,
                        float* dact, const float* dout, const float* in, const float* h, const float* act);
  // Expert parallelism, per MoE layer: the rows this rank's experts received in the last forward
  // (from each group rank, its rows for each local expert in order) and the buffers of their MLPs,
  // kept for the backward. Grown when a forward receives more rows than ever before.
  struct ExpertParallelLayer {
    std::vector<size_t> send_bytes, recv_bytes;  // per group rank, rows of C floats
    std::vector<ExpertBlock> blocks;
    size_t rows = 0, capacity = 0;
    float *in = nullptr, *h = nullptr, *act = nullptr, *out = nullptr;  // one allocation at `in`
  };
  bool expert_parallel() const { return options_.expert_ranks > 1; }
  int local_experts() const { return cfg_.moe.experts / options_.expert_ranks; }
  // Exchanges the per-expert counts of the layer's plan and fills ep's sizes and blocks.
  void plan_expert_exchange(const std::vector<int32_t>& counts, ExpertParallelLayer& ep);
  void ensure_expert_rows(ExpertParallelLayer& ep);
  void ensure_expert_scratch(size_t rows);
  size_t expert_row_floats() const;  // floats of in + h + act + out per row
  bool dense_swiglu() const { return cfg_.arch == Arch::Llama; }
  size_t head_index() const { return cfg_.tied_head ? wte_ : head_; }
  size_t weight_scratch_floats() const;  // 0 unless linear weights come from a source

  ModelConfig cfg_;
  Ops& ops_;
  GptOptions options_;
  std::vector<ParamTensor> tensors_;
  std::vector<float> init_std_;  // per tensor: > 0 normal(0, std); 0 zeros; < 0 ones
  size_t num_params_ = 0;
  size_t resident_params_ = 0;
  std::vector<LayerParams> layers_;
  size_t wte_ = npos, wpe_ = npos, lnfw_ = npos, lnfb_ = npos, head_ = npos;
  size_t max_linear_numel_ = 0;  // of the quantizable tensors
  size_t expert_begin_ = 0;
  ExpertExchange* exchange_ = nullptr;
  std::vector<ExpertParallelLayer> ep_layers_;
  // The backward's expert-side scratch under expert parallelism: dout, din, dh, dact rows.
  float* ep_scratch_ = nullptr;
  size_t ep_scratch_rows_ = 0;
  const LinearWeightSource* weight_source_ = nullptr;
  float* weight_scratch_ = nullptr;  // max_linear_numel_ floats, while a source is set
  LinearQuantization quant_;
  float* params_ = nullptr;
  float* grads_ = nullptr;
  // MoE state: expert bias ([moe layers, E]; backend + host mirror), router masses and z sums
  // accumulated since reset_moe_totals() (backend), and per MoE layer the last forward's counts
  // (the expert GEMMs' row counts, reused by the backward) and the counts' running totals (host).
  float* expert_bias_ = nullptr;
  std::vector<float> expert_bias_host_;
  float* moe_prob_sums_ = nullptr;
  double* moe_z_sums_ = nullptr;
  std::vector<std::vector<int32_t>> moe_counts_;  // [moe layer][2E]: kept, routed
  MoeTotals moe_totals_;  // the host's part (routed, kept, tokens); read_moe_totals() adds the rest
  float* rope_cos_ = nullptr;  // [max_seq_len, head_dim/2] (llama)
  float* rope_sin_ = nullptr;

  char* act_buffer_ = nullptr;
  int act_B_ = 0, act_T_ = 0;  // the buffer's capacity
  ActPointers acts_;
  int last_B_ = 0, last_T_ = 0;
  bool backward_ready_ = false;  // a forward with targets ran and backward() has not consumed it
  float backward_loss_scale_ = 1.0f;  // of the running backward (the MoE auxiliary losses use it too)
};

}  // namespace eco
