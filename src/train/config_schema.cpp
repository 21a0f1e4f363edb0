#include "train/config_schema.h"

#include <cstdint>
#include <cstdio>
#include <string>

namespace eco {
namespace {

std::string str(int64_t v) { return std::to_string(v); }

// A product of bounded keys, exact while a double holds it exactly.
std::string format_tokens(double n) {
  char buf[48];
  if (n <= 0x1p53) std::snprintf(buf, sizeof buf, "%.0f", n);
  else std::snprintf(buf, sizeof buf, "%.3e", n);
  return buf;
}

// Every Int key has an upper bound, so no value can wrap when the code narrows or multiplies it.
// Keys the code holds in an int (Config::get_int32) are bounded by this at most.
constexpr double kIntMax = INT32_MAX;
// Step counts and cadences (int64 in the trainer): more than any run takes (30 years at 1 ms a
// step), and small enough that step arithmetic in doubles (warmup_ratio * steps) stays exact.
constexpr double kMaxSteps = 1e12;
// Seeds are stored in config.json and checkpoints: 2^53 - 1 is the largest integer that every
// JSON reader (JavaScript, a double) holds exactly.
constexpr double kMaxSeed = 9007199254740991.0;
// The model indexes the tokens of a micro-batch (batch_size * seq_len) with an int.
constexpr double kMaxMicroBatchTokens = INT32_MAX;
// Tokens per optimizer step: 2^40 (~1.1e12) is 10^4 times the largest published LLM batch (~6e7
// tokens), so only a typo reaches it, and token counts derived from it (tokens/s, tokens per run)
// stay far from 64-bit overflow.
constexpr double kMaxTokensPerStep = 0x1p40;

std::vector<Section> sections() {
  return {
      {"model", "The network: architecture and shape, initialisation."},
      {"moe", "Sparse mixture of experts: which layers, how many experts, routing and load balancing (off by default)."},
      {"data", "Token shards (llm.c format) and the tokenizer used to print samples."},
      {"optim", "Optimizer, weight mode (where ECO lives), number formats and the learning-rate schedule."},
      {"train", "Length, batch shape, evaluation / sampling / checkpoint cadence, threads."},
      {"dist", "Training across ranks (mpirun / srun): how gradients, optimizer state and experts are shared out."},
      {"log", "Where the run writes its files and how often it prints."},
  };
}

std::vector<SchemaEntry> entries() {
  return {
      // model
      enum_key("model.arch", "gpt2", {"gpt2", "llama"},
               "gpt2: LayerNorm, GELU(tanh), learned positions, biases, tied head (llm.c layout). "
               "llama: RMSNorm, RoPE, SwiGLU, no biases."),
      int_key("model.vocab_size", 50257, Range::closed(2, 1 << 20),
              "Real vocabulary: every token in the data must be below it (50257 for GPT-2 BPE, 256 for bytes)."),
      int_key("model.padded_vocab", 0, Range::closed(0, 1 << 21),
              "Rows of the embedding and head. 0 = vocab_size rounded up to a multiple of 128 (as llm.c); "
              "otherwise at least vocab_size. Padding rows stay zero."),
      int_key("model.n_layer", 4, Range::closed(1, 256), "Transformer blocks."),
      int_key("model.n_head", 4, Range::closed(1, 1024), "Attention heads; must divide d_model."),
      int_key("model.d_model", 256, Range::closed(1, 65536), "Width of the residual stream."),
      int_key("model.max_seq_len", 1024, Range::closed(1, 1 << 20),
              "Longest sequence: learned position rows (gpt2) or RoPE table length (llama)."),
      int_key("model.mlp_hidden", 0, Range::closed(0, 1 << 20),
              "MLP hidden width. 0 = default: 4*d_model (gpt2), ceil(8*d_model/3) rounded up to 256 (llama)."),
      bool_key("model.tied_head", true, "Share the LM head with the token embedding. gpt2 requires true."),
      float_key("model.rope_theta", 10000.0, Range::above(0), "RoPE base frequency (llama)."),
      float_key("model.init_std", 0.02, Range::above(0),
                "Std of the normal init; residual projections use init_std / sqrt(2 * n_layer)."),
      float_key("model.norm_eps", 1e-5, Range::above(0), "Epsilon of LayerNorm / RMSNorm."),
      path_key("model.init_from", "",
               "llm.c fp32 checkpoint (magic 20240326) to start from instead of a random init; empty = random init. "
               "Its shape must match the model section."),
      // moe
      int_key("moe.experts", 0, Range::closed(0, 1024),
              "Experts per MoE layer; 0 = a dense model (the other moe keys are then ignored)."),
      int_key("moe.top_k", 2, Range::closed(1, 16), "Experts each token is sent to; at most moe.experts."),
      int_key("moe.first_layer", 0, Range::closed(0, 255), "First MoE layer (a block index below model.n_layer)."),
      int_key("moe.every", 1, Range::closed(1, 256),
              "MoE layers are first_layer, first_layer + every, ...; 1 = every layer from first_layer on, 2 = every other."),
      int_key("moe.expert_hidden", 0, Range::closed(0, 1 << 20), "Hidden width of each expert MLP; 0 = the model's MLP width."),
      enum_key("moe.activation", "auto", {"auto", "gelu", "swiglu"},
               "Expert MLP: gelu (two matrices, as the paper's 2.1B SMoE) or swiglu ([gate | up] then down); "
               "auto = the architecture's own (gpt2: gelu, llama: swiglu)."),
      bool_key("moe.shared_expert", false,
               "Keep the layer's dense MLP as a shared expert that every token also passes through."),
      float_key("moe.capacity_factor", 0.0, Range::at_least(0),
                "0 = dropless. Otherwise each expert takes at most ceil(capacity_factor * tokens * top_k / experts) "
                "assignments per micro-batch, the first ones in token order; the rest are dropped (the token keeps its "
                "residual and its other experts)."),
      bool_key("moe.renormalize", true,
               "Divide the top-k gates by their sum (with top_k 1 the gate is then 1 and the router learns only from "
               "the balancing losses; set false for Switch-style top-1)."),
      float_key("moe.aux_loss_coef", 0.01, Range::at_least(0),
                "Switch load-balancing loss coefficient alpha: loss += alpha * E * sum_e f_e * P_e (alpha when balanced)."),
      float_key("moe.z_loss_coef", 0.0, Range::at_least(0), "Router z-loss coefficient: loss += coef * mean(logsumexp(logits)^2)."),
      float_key("moe.bias_update_rate", 0.0, Range::at_least(0),
                "Aux-loss-free balancing: after each step bias[e] += rate * sign(mean load - load[e]); the bias changes "
                "the top-k selection only, never the gates. 0 = off (e.g. 1e-3 with aux_loss_coef 0)."),
      bool_key("moe.quantize_dense_linears", false,
               "The paper quantizes only the expert linears of an MoE model; true also quantizes the attention, "
               "dense-MLP and shared-expert linears."),
      // data
      path_key("data.train", "", "Training token shard(s): a file or a glob such as data/fineweb/train_*.bin.",
               /*required=*/true),
      path_key("data.val", "", "Validation token shard(s): a file or a glob.", /*required=*/true),
      enum_key("data.tokenizer", "gpt2", {"gpt2", "byte"}, "Tokenizer used to decode printed samples."),
      path_key("data.tokenizer_dir", "data/tokenizer",
               "Directory with the GPT-2 vocab and merges; needed only to print samples with tokenizer gpt2 "
               "(the trainer warns and prints token ids when it is missing).",
               /*required=*/false, /*check_exists=*/false),
      bool_key("data.shuffle", true, "Shuffle the order of training windows, seeded by train.seed (false = in file order)."),
      // optim
      enum_key("optim.mode", "fp32", {"fp32", "bf16", "bf16_sr", "master", "master_sr", "naive", "sr", "eco", "eco_sr"},
               "How quantized weights are stored and updated: fp32 reference; bf16 / FP8 copies with an fp32 master "
               "(bf16, master, master_sr); or low-precision weights only, rounded to nearest (naive), stochastically "
               "(sr, bf16_sr), or with the rounding error folded into the first moment (eco, eco_sr). See DESIGN.md 4."),
      enum_key("optim.optimizer", "adamw", {"adamw", "sgdm"}, "AdamW, or SGD with momentum (beta1 is the momentum)."),
      float_key("optim.lr", 6e-4, Range::above(0), "Peak learning rate."),
      float_key("optim.beta1", 0.9, Range::closed_open(0, 1), "First-moment decay (momentum for sgdm)."),
      float_key("optim.beta2", 0.95, Range::closed_open(0, 1), "Second-moment decay (AdamW)."),
      float_key("optim.eps", 1e-8, Range::above(0), "AdamW epsilon, added to sqrt(v_hat)."),
      float_key("optim.weight_decay", 0.1, Range::at_least(0), "Decoupled weight decay coefficient (lambda in DESIGN.md 4)."),
      float_key("optim.grad_clip", 1.0, Range::at_least(0), "Clip the global gradient norm to this value; 0 = off."),
      enum_key("optim.schedule", "cosine", {"cosine", "linear", "constant"},
               "Learning-rate shape after warmup: cosine or linear decay to final_lr_ratio * lr, or constant."),
      int_key("optim.warmup_steps", -1, Range::closed(-1, kMaxSteps), "Linear warmup length in steps; -1 = warmup_ratio * train.steps."),
      float_key("optim.warmup_ratio", 0.1, Range::closed(0, 1), "Warmup length as a fraction of train.steps (when warmup_steps is -1)."),
      float_key("optim.warmup_init_ratio", 0.01, Range::closed(0, 1), "Warmup starts at this fraction of lr."),
      float_key("optim.final_lr_ratio", 0.1, Range::closed(0, 1), "Cosine / linear decay ends at this fraction of lr."),
      enum_key("optim.weight_format", "e4m3", {"e4m3", "e5m2", "int8", "int4", "int2", "ternary"},
               "Number format of the stored quantized weights. int4 / int2 / ternary are packed low-bit integers "
               "(docs/lowbit.md; CPU backend, and CUDA kernels not yet run on a GPU) with the scales of optim.group_size, optim.lowbit_scale and "
               "optim.scale_dtype."),
      enum_key("optim.scaling", "row", {"row", "tensor", "block128"},
               "Scale granularity of e4m3 / e5m2 / int8 weights: one per output row, one per tensor, or per 128x128 block."),
      bool_key("optim.pow2_scales", false, "Round every scale to a power of two (e4m3 / e5m2 / int8 weights)."),
      int_key("optim.group_size", 128, Range::closed(32, 128),
              "int4 weights: elements along K (a row of the weight) sharing one absmax scale; 32, 64 or 128. The "
              "scales are recomputed at every update."),
      enum_key("optim.lowbit_scale", "row", {"row", "tensor"},
               "int2 / ternary weights: one absmean scale per output row or per tensor, computed from the initial "
               "weights and kept (DQT-style)."),
      enum_key("optim.scale_dtype", "fp32", {"fp32", "bf16"}, "Storage of the int4 / int2 / ternary weight scales."),
      enum_key("optim.state_format", "fp32", {"fp32", "bf16", "int8", "solo4", "solo3", "solo2", "m8v4"},
               "Storage of the optimizer moments m and v: fp32; bf16; or block-wise (128 elements per block; CUDA "
               "kernels not yet run on a GPU): int8 (m linear INT8, v 8-bit log) or SOLO's solo4 / solo3 / solo2 (m a B-bit "
               "signed dynamic map, v a B-bit log quantizer), or m8v4 (INT8 m, 4-bit log v: the format for "
               "eco / eco_sr, whose error a low-bit m loses). Every low-precision format stores with stochastic "
               "rounding (docs/lowbit.md)."),
      bool_key("optim.beta1_from_state_format", true,
               "With a SOLO state format, use SOLO's beta1 for its bit width (solo4 0.8, solo3 0.65, solo2 0.5) "
               "instead of optim.beta1; false keeps optim.beta1. No effect for the other formats."),
      bool_key("optim.fp8_backward", false, "Backward GEMMs in FP8 (E5M2 output gradients) instead of BF16/FP32."),
      bool_key("optim.quantize_activations", true, "Quantize forward GEMM activations to E4M3 (per-token scales) in FP8 modes."),
      // train
      int_key("train.steps", 1000, Range::closed(1, kMaxSteps), "Optimizer steps of the whole run."),
      int_key("train.batch_size", 8, Range::closed(1, kIntMax), "Sequences per micro-batch (per rank)."),
      int_key("train.seq_len", 128, Range::closed(1, 1 << 20), "Tokens per sequence; at most model.max_seq_len."),
      int_key("train.grad_accum", 1, Range::closed(1, kIntMax), "Micro-batches accumulated per optimizer step."),
      int_key("train.eval_every", 100, Range::closed(0, kMaxSteps),
              "Validation loss every N steps; 0 = only at the start and the end."),
      int_key("train.eval_batches", 8, Range::closed(1, kIntMax), "Validation micro-batches per evaluation."),
      int_key("train.sample_tokens", 64, Range::closed(0, 1 << 20),
              "Tokens generated and printed at each evaluation (one forward pass each); 0 = no samples."),
      int_key("train.seed", 1337, Range::closed(0, kMaxSeed), "Seed of the init, data order, stochastic rounding and sampling."),
      int_key("train.checkpoint_every", 0, Range::closed(0, kMaxSteps), "Checkpoint every N steps; 0 = only at the end."),
      int_key("train.keep_checkpoints", 2, Range::closed(1, kIntMax), "Newest checkpoints kept; older ones are deleted."),
      // The OpenMP runtime aborts on absurd thread counts; 1024 is beyond any single machine here.
      enum_key("train.device", "cpu", {"cpu", "cuda"},
               "Backend of the training step: cpu (OpenBLAS + OpenMP, the reference) or cuda (one GPU; needs a build "
               "with the CUDA toolkit). Checkpoints of either resume on the other."),
      int_key("train.threads", 0, Range::closed(0, 1024), "CPU threads of the cpu backend; 0 = all cores."),
      int_key("train.max_bad_steps", 5, Range::closed(0, kMaxSteps),
              "Consecutive steps with a NaN/Inf loss or gradient norm that are skipped before the run stops."),
      // dist
      int_key("dist.zero", 0, Range::closed(0, 1),
              "0 = data parallel with an all-reduce of the gradients (every rank holds the whole optimizer state); "
              "1 = ZeRO-1: gradients reduce-scattered into row-aligned shards, each rank updates its shard, the FP8 "
              "codes and scales are all-gathered."),
      int_key("dist.ep", 1, Range::closed(1, 1024),
              "Expert-parallel group size: the experts of every MoE layer are split over this many ranks (must divide "
              "moe.experts and the world size); 1 = every rank holds every expert."),
      // log
      out_path_key("log.dir", "runs/default", "Run directory: config.json, metrics.jsonl and checkpoints."),
      int_key("log.every", 1, Range::closed(1, kMaxSteps), "Print a console line every N steps."),
  };
}

std::vector<CrossCheck> cross_checks() {
  return {
      {"model.d_model must be divisible by model.n_head.",
       [](const Config& c) {
         const int64_t d = c.get_int("model.d_model"), h = c.get_int("model.n_head");
         if (d % h != 0)
           throw_config_error("model.d_model", str(d) + " is not divisible by model.n_head (" + str(h) + ")");
       }},
      {"llama: the head dimension model.d_model / model.n_head must be even (RoPE rotates pairs of dimensions).",
       [](const Config& c) {
         const int64_t hd = c.get_int("model.d_model") / c.get_int("model.n_head");
         if (c.get_string("model.arch") == "llama" && hd % 2 != 0)
           throw_config_error("model.n_head", "llama needs an even head dimension for RoPE, d_model/n_head = " + str(hd));
       }},
      {"gpt2 ties the LM head to the token embedding (llm.c layout): model.tied_head must be true.",
       [](const Config& c) {
         if (c.get_string("model.arch") == "gpt2" && !c.get_bool("model.tied_head"))
           throw_config_error("model.tied_head", "the gpt2 architecture always ties the head; set it to true or use arch llama");
       }},
      {"model.padded_vocab is 0 or at least model.vocab_size.",
       [](const Config& c) {
         const int64_t p = c.get_int("model.padded_vocab"), v = c.get_int("model.vocab_size");
         if (p != 0 && p < v)
           throw_config_error("model.padded_vocab", "expected 0 or a value >= model.vocab_size (" + str(v) + "), got " + str(p));
       }},
      {"train.seq_len is at most model.max_seq_len.",
       [](const Config& c) {
         const int64_t t = c.get_int("train.seq_len"), m = c.get_int("model.max_seq_len");
         if (t > m)
           throw_config_error("train.seq_len", str(t) + " exceeds model.max_seq_len (" + str(m) +
                                                   "); lower train.seq_len or raise model.max_seq_len");
       }},
      // In doubles: each factor is bounded, but their product may not fit in 64 bits.
      {"train.batch_size * train.seq_len (tokens per micro-batch) is at most 2^31 - 1.",
       [](const Config& c) {
         const double tokens = static_cast<double>(c.get_int("train.batch_size")) * static_cast<double>(c.get_int("train.seq_len"));
         if (tokens > kMaxMicroBatchTokens)
           throw_config_error("train.batch_size", "batch_size * seq_len = " + format_tokens(tokens) +
                                                      " tokens per micro-batch exceeds 2^31 - 1; lower train.batch_size "
                                                      "and raise train.grad_accum instead");
       }},
      {"train.batch_size * train.seq_len * train.grad_accum (tokens per optimizer step) is at most 2^40.",
       [](const Config& c) {
         const double tokens = static_cast<double>(c.get_int("train.batch_size")) *
                               static_cast<double>(c.get_int("train.seq_len")) *
                               static_cast<double>(c.get_int("train.grad_accum"));
         if (tokens > kMaxTokensPerStep)
           throw_config_error("train.grad_accum", "batch_size * seq_len * grad_accum = " + format_tokens(tokens) +
                                                      " tokens per step exceeds 2^40 (1099511627776); lower one of them");
       }},
      {"moe.top_k is at most moe.experts; moe.first_layer is below model.n_layer.",
       [](const Config& c) {
         const int64_t e = c.get_int("moe.experts"), k = c.get_int("moe.top_k");
         if (e == 0) return;
         if (k > e) throw_config_error("moe.top_k", str(k) + " exceeds moe.experts (" + str(e) + ")");
         const int64_t f = c.get_int("moe.first_layer"), l = c.get_int("model.n_layer");
         if (f >= l) throw_config_error("moe.first_layer", str(f) + " is not below model.n_layer (" + str(l) + ")");
       }},
      {"dist.ep is 1 for a dense model and divides moe.experts.",
       [](const Config& c) {
         const int64_t ep = c.get_int("dist.ep"), e = c.get_int("moe.experts");
         if (ep == 1) return;
         if (e == 0) throw_config_error("dist.ep", "expert parallelism needs an MoE model (moe.experts > 0)");
         if (e % ep != 0) throw_config_error("dist.ep", str(ep) + " does not divide moe.experts (" + str(e) + ")");
       }},
      {"optim.group_size is 32, 64 or 128.",
       [](const Config& c) {
         const int64_t g = c.get_int("optim.group_size");
         if (g != 32 && g != 64 && g != 128) throw_config_error("optim.group_size", str(g) + " is not 32, 64 or 128");
       }},
      {"optim.warmup_steps is at most train.steps.",
       [](const Config& c) {
         const int64_t w = c.get_int("optim.warmup_steps"), s = c.get_int("train.steps");
         if (w > s) throw_config_error("optim.warmup_steps", str(w) + " exceeds train.steps (" + str(s) + ")");
       }},
  };
}

}  // namespace

const Schema& eco_train_schema() {
  static const Schema schema{sections(), entries(), cross_checks()};
  return schema;
}

std::string eco_train_config_markdown() {
  return "# eco_train configuration\n\n"
         "<!-- Generated from src/train/config_schema.cpp by tests/test_config.cpp; regenerate with\n"
         "     ECO_UPDATE_DOCS=1 build/tests/test_config \"[docs]\" -->\n\n"
         "A run is configured by one JSON file (`eco_train --config FILE`) with one object per section.\n"
         "Keys left out take the defaults below. Any key can be overridden on the command line with\n"
         "`--set KEY=VALUE`, applied in order after the file; VALUE is read as JSON when it parses\n"
         "(`--set optim.lr=3e-4`, `--set data.shuffle=false`) and as text otherwise\n"
         "(`--set data.train=data/x/train_*.bin`). `//` and `/* */` comments are allowed in the file.\n\n"
         "Every key is checked before any work: an unknown key (with a suggestion), a wrong type, a value out of\n"
         "range, a missing input file or a broken rule across keys stops the run with exit code 2 and one line\n"
         "naming the key, e.g. `config error: optim.lr: expected a number > 0, got -1`.\n\n"
         "Relative paths are resolved from the current working directory, not from the config file's\n"
         "directory. Input paths (`path`) must name an existing file or directory, or a glob with at least one\n"
         "match; output paths are created by the run. The resolved config (every key, defaults filled) is\n"
         "written to `LOG_DIR/config.json` and stored in every checkpoint. `eco_train --help-config` prints\n"
         "this reference as text.\n\n" +
         schema_markdown(eco_train_schema());
}

}  // namespace eco
