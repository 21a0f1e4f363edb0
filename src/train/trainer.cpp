#include "train/trainer.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <exception>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <thread>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/log.h"
#include "data/loader.h"
#include "data/tokenizer.h"
#include "dist/data_parallel.h"
#include "dist/expert_parallel.h"
#include "dist/nccl_communicator.h"
#ifdef ECO_WITH_CUDA
#include "cuda/cuda_ops.h"
#endif
#include "dist/rank_agreement.h"
#include "dist/zero1.h"
#include "model/gpt.h"
#include "model/llmc_io.h"
#include "optim/grad_norm.h"
#include "optim/lr_schedule.h"
#include "train/backend.h"
#include "train/checkpoint_store.h"
#include "train/metrics.h"
#include "train/moe_metrics.h"
#include "train/model_setup.h"
#include "train/memory_plan.h"
#include "train/model_weights.h"
#include "train/run_dir.h"
#include "train/sampler.h"

namespace eco {
namespace {

constexpr const char* kCheckpointFormat = "eco_train-checkpoint-1";

std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) { g_stop_signal.store(sig); }

// A meta field of a checkpoint this build wrote, or CheckpointError (the checkpoint is skipped).
const nlohmann::json& meta_field(const LoadedCheckpoint& ck, const char* key, bool ok(const nlohmann::json&)) {
  const auto it = ck.meta.find(key);
  if (it == ck.meta.end() || !ok(*it))
    throw CheckpointError((ck.dir / "manifest.json").string() + ": trainer state \"" + key + "\" is missing or malformed");
  return *it;
}

// The first key where two config sections differ, as "model.d_model (64 in the checkpoint, 32 now)".
std::string first_difference(const nlohmann::json& saved, const nlohmann::json& now, const std::string& section) {
  const nlohmann::json patch = nlohmann::json::diff(saved, now);
  if (patch.empty()) return section;
  std::string pointer = patch[0].value("path", "");
  std::string key = section;
  for (char c : pointer) key += c == '/' ? '.' : c;
  const nlohmann::json::json_pointer ptr(pointer);
  const std::string before = saved.contains(ptr) ? saved[ptr].dump() : "absent";
  const std::string after = now.contains(ptr) ? now[ptr].dump() : "absent";
  return key + " (" + before + " in the checkpoint, " + after + " now)";
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  long s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

LrSchedule schedule_from(const Config& cfg) {
  LrSchedule s;
  s.peak_lr = cfg.get_float("optim.lr");
  s.total_steps = cfg.get_int("train.steps");
  int64_t warmup = cfg.get_int("optim.warmup_steps");
  s.warmup_steps = warmup >= 0 ? warmup : static_cast<int64_t>(std::llround(cfg.get_float("optim.warmup_ratio") * s.total_steps));
  s.warmup_init_ratio = cfg.get_float("optim.warmup_init_ratio");
  s.final_lr_ratio = cfg.get_float("optim.final_lr_ratio");
  const std::string kind = cfg.get_string("optim.schedule");
  s.decay = kind == "linear" ? DecayKind::Linear : kind == "constant" ? DecayKind::Constant : DecayKind::Cosine;
  return s;
}

// What the host reads of a training step, once per step: everything else stays in the backend.
struct StepScalars {
  double loss_sum = 0.0;    // Σ over micro-batches of their mean loss
  double grad_norm_sq = 0.0;
  double expert_norm_sq = 0.0;  // expert parallelism: Σ g² of this rank's experts (the rest in grad_norm_sq)
  int64_t bad_weights = 0;  // weights an update made non-finite (since the last check)
};

class TrainingRun {
 public:
  TrainingRun(const Config& cfg, const CliArgs& args, Communicator& comm)
      : cfg_(cfg),
        args_(args),
        comm_(comm),
        root_(comm.rank() == 0),
        world_(comm.world()),
        out_dir_(cfg.get_string("log.dir")),
        B_(cfg.get_int32("train.batch_size")),
        T_(cfg.get_int32("train.seq_len")),
        accum_(cfg.get_int32("train.grad_accum")),
        steps_(cfg.get_int("train.steps")),
        seed_(static_cast<uint64_t>(cfg.get_int("train.seed"))),
        schedule_(schedule_from(cfg)) {}

  ~TrainingRun() {
    if (scalars_) ops_->free(scalars_);
  }
  int execute();

 private:
  void setup();
  void print_plan() const;
  std::optional<int64_t> resume_from_checkpoint();
  void check_run_dir() const;
  void check_memory() const;
  double evaluate(int64_t step);
  void sample(int64_t step);
  void save_checkpoint(int64_t step);
  void inject_test_fault(int64_t step) const;
  void write_checkpoint(int64_t step);
  void log_step(int64_t step, float loss, double lr, double norm, double step_seconds);
  // The step's MoE totals summed over ranks (every rank then holds the same picture and bias).
  std::vector<MoeLayerStats> moe_step_totals(MoeTotals* totals);
  void record(const nlohmann::json& r) {
    if (metrics_) metrics_->write(r);  // rank 0 only
  }
  int64_t global_batch_tokens() const { return static_cast<int64_t>(world_) * B_ * T_ * accum_; }

  const Config& cfg_;
  const CliArgs& args_;
  Communicator& comm_;
  const bool root_;  // rank 0: the only rank that writes the run directory and prints progress
  const int world_;
  std::filesystem::path out_dir_;
  const int B_, T_, accum_;
  const int64_t steps_;
  const uint64_t seed_;
  const LrSchedule schedule_;
  ModelConfig mcfg_;
  std::unique_ptr<Ops> ops_;
  std::unique_ptr<ModelWeights> weights_;
  GPT* model_ = nullptr;
  std::unique_ptr<DataLoader> train_loader_, val_loader_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<MetricsWriter> metrics_;  // rank 0 only
  // NCCL over the device buffers when train.device=cuda runs on several ranks (nullptr: gradients
  // are staged through host memory over comm_). Declared first: destroyed after its users.
  std::unique_ptr<Communicator> device_comm_;
  Communicator* grad_comm_ = nullptr;  // what moves gradients and weights: device_comm_ or comm_
  std::unique_ptr<GradientAllReduce> grad_sync_;
  // Expert parallelism (dist.ep > 1): the groups over comm_ (counts, norms) and over the device
  // communicator when there is one (rows, gradients), the model's exchange, and the sum of the
  // expert gradients over their replicas (grad_sync_ then sums only the tensors every rank holds).
  int ep_ = 1;
  ExpertParallelGroups ep_host_, ep_device_;
  std::unique_ptr<CommunicatorExpertExchange> expert_exchange_;
  std::unique_ptr<GradientAllReduce> expert_grad_sync_;
  bool cpu_backend_ = true;
  // The optimizer's update is split over ranks (ZeRO-1 rows, or experts): every rank takes part in
  // a checkpoint, and the count of weights an update broke is summed over the ranks.
  bool split_updates() const { return zero_ != nullptr || ep_ > 1; }
  std::unique_ptr<Zero1> zero_;            // dist.zero=1 on more than one rank: replaces grad_sync_
  std::vector<GatherRegion> zero_regions_;  // what zero_ all-gathers after each update
  uint64_t gather_bytes_sent_ = 0;         // by this rank, in ZeRO-1's weight all-gathers
  int64_t updates_this_run_ = 0;
  std::vector<int32_t> inputs_, targets_;
  int64_t bad_steps_ = 0;       // consecutive skipped (non-finite) steps
  std::vector<MoeLayerStats> moe_stats_;  // of the last step (empty for a dense model)
  int64_t updates_ = 0;         // optimizer updates applied: Adam's t (skipped steps do not count)
  std::unique_ptr<RunDirLock> lock_;  // rank 0 only
  StepScalars* scalars_ = nullptr;  // backend memory
  StepScalars read_scalars() const;
  void check_updates_finite() const;
  void throw_if_bad_update(const StepScalars& s) const;
  double prior_elapsed_s_ = 0;  // training time of earlier invocations (resume)
  std::chrono::steady_clock::time_point run_start_;
  double train_seconds_ = 0;    // time in train steps of this invocation, for tokens/s and ETA
  int64_t steps_this_run_ = 0;
  uint64_t grad_bytes_sent_ = 0;  // by this rank, in the gradient all-reduces of this invocation
  uint64_t expert_rows_sent_ = 0;  // by this rank, in the training steps' expert all-to-alls (token rows)
};

void TrainingRun::setup() {
  BackendChoice backend;
  backend.device = cfg_.get_string("train.device");
  backend.threads = cfg_.get_int32("train.threads");
  if (backend.device == "cuda") backend.cuda_device = local_gpu(comm_);  // collective
  ops_ = make_backend(backend);
  cpu_backend_ = backend.device == "cpu";

  mcfg_ = model_config_from(cfg_);
  if (T_ > mcfg_.max_seq_len)
    throw ConfigError("train.seq_len: " + std::to_string(T_) + " exceeds model.max_seq_len (" +
                      std::to_string(mcfg_.max_seq_len) + ")");
  ep_ = cfg_.get_int32("dist.ep");
  check_memory();  // also a ConfigError when dist.ep does not divide the world size (check_layout)
  // Each rank reads its B windows of every global batch (data/loader.h), so the ranks together see
  // exactly the batches one process with batch_size world*B would.
  train_loader_ = std::make_unique<DataLoader>(cfg_.get_string("data.train"), B_, T_, comm_.rank(), world_, seed_,
                                               cfg_.get_bool("data.shuffle"), mcfg_.vocab_size);
  val_loader_ = std::make_unique<DataLoader>(cfg_.get_string("data.val"), B_, T_, comm_.rank(), world_, seed_,
                                             /*shuffle=*/false, mcfg_.vocab_size);

  // ZeRO-1 (docs/distributed.md): each rank updates, and keeps moments for, its range of the
  // parameters; with one rank it is plain training.
  const bool zero = cfg_.get_int("dist.zero") == 1 && world_ > 1;
  if (ep_ > 1) ep_host_ = split_expert_parallel(comm_, ep_);  // collective
  weights_ = std::make_unique<ModelWeights>(mcfg_, *ops_, optimizer_spec_from(cfg_),
                                            cfg_.get_bool("optim.quantize_activations"), cfg_.get_bool("optim.fp8_backward"),
                                            zero ? OptimizerShard{comm_.rank(), world_} : OptimizerShard{},
                                            ExpertSplit{ep_host_.group_rank, ep_});
  model_ = &weights_->model();
  if (backend.device == "cuda") {
    CUstream_st* compute = nullptr;
#ifdef ECO_WITH_CUDA
    compute = static_cast<cuda::CudaOps&>(*ops_).stream();
#endif
    device_comm_ = make_device_communicator(comm_, backend.cuda_device, compute);  // collective
  }
  grad_comm_ = device_comm_ ? device_comm_.get() : &comm_;
  // The communicator reads the backend's buffers in place (host memory, or NCCL on the device).
  const bool in_place = backend.device == "cpu" || device_comm_ != nullptr;
  if (zero) {
    zero_ = std::make_unique<Zero1>(*grad_comm_, *ops_, /*host_buffers=*/in_place, weights_->optimizer().shard_bounds());
    zero_regions_ = weights_->optimizer().gather_regions();
  } else {
    grad_sync_ = std::make_unique<GradientAllReduce>(*grad_comm_, *ops_, /*host_buffers=*/in_place);
  }
  if (ep_ > 1) {
    if (device_comm_) ep_device_ = split_expert_parallel(*device_comm_, ep_);  // collective
    const ExpertParallelGroups& rows = device_comm_ ? ep_device_ : ep_host_;
    expert_exchange_ = std::make_unique<CommunicatorExpertExchange>(*ep_host_.experts, *rows.experts, *ops_, in_place);
    model_->set_expert_exchange(expert_exchange_.get());
    if (rows.replicas->world() > 1)
      expert_grad_sync_ = std::make_unique<GradientAllReduce>(*rows.replicas, *ops_, /*host_buffers=*/in_place);
  }
  const std::string init_from = cfg_.get_string("model.init_from");
  if (!init_from.empty()) {
    weights_->import_llmc(init_from);
    spdlog::info("initial weights from llm.c checkpoint {}", init_from);
  } else {
    weights_->init(seed_);
  }

  if (cfg_.get_int("train.sample_tokens") > 0) {
    try {
      if (cfg_.get_string("data.tokenizer") == "byte") tokenizer_ = std::make_unique<ByteTokenizer>();
      else tokenizer_ = std::make_unique<Gpt2Tokenizer>(cfg_.get_string("data.tokenizer_dir"));
    } catch (const Error& e) {
      spdlog::warn("samples will be printed as token ids: {}", e.what());
    }
  }
  inputs_.resize(static_cast<size_t>(B_) * T_);
  targets_.resize(static_cast<size_t>(B_) * T_);
}

void TrainingRun::print_plan() const {
  spdlog::info("model: {}", model_->summary());
  const OptimizerSpec& spec = weights_->spec();
  spdlog::info("optimizer: {} {}, weights {}, states {}, beta1 {}", spec.kind == OptimizerKind::AdamW ? "AdamW" : "SGDM",
               to_string(spec.mode), traits_of(spec.mode).quantized ? describe_stored_weights(spec) : std::string("fp32"),
               spec.state_format == StateFormat::Fp32 ? std::string("fp32")
                                                      : std::string(to_string(spec.state_format)) + " (SR)",
               spec.beta1);
  spdlog::info("memory per rank: {}", weights_->memory(B_, T_).to_string());
  spdlog::info("training: {} steps x {} tokens/step (global batch {} = {} ranks x B={} x accum={}, T={}), lr {:.2e} {} "
               "with {} warmup steps, backend {}; train data {} windows, val {} windows",
               steps_, global_batch_tokens(), static_cast<int64_t>(world_) * B_ * accum_, world_, B_, accum_, T_,
               schedule_.peak_lr,
               cfg_.get_string("optim.schedule"), schedule_.warmup_steps, ops_->describe(),
               train_loader_->num_windows(), val_loader_->num_windows());
  if (world_ > 1 && !zero_ && ep_ == 1)
    spdlog::info("data parallel over {} ranks ({}): each step sums {} gradient floats ({}) over the ranks in rank order",
                 world_, comm_.describe(), model_->num_params(),
                 format_bytes(4.0 * static_cast<double>(model_->num_params())));
  if (ep_ > 1)
    spdlog::info("expert parallel: {} groups of {} ranks; this rank holds experts {}..{} of each MoE layer ({} replicas "
                 "each); every rank's tensors are summed over the {} ranks, the experts' over their replicas",
                 world_ / ep_, ep_, ep_host_.group_rank * (mcfg_.moe.experts / ep_),
                 (ep_host_.group_rank + 1) * (mcfg_.moe.experts / ep_) - 1, world_ / ep_, world_);
  if (zero_) {
    size_t gathered = 0;
    for (const GatherRegion& g : zero_regions_) gathered += g.bytes[static_cast<size_t>(comm_.rank())];
    spdlog::info("ZeRO-1 over {} ranks ({}): rank 0 owns {} of {} parameters and all-gathers {} bytes of weights in "
                 "{} collective(s) per step; optimizer state per rank: m {}, v {}",
                 world_, comm_.describe(), zero_->own_count(), model_->num_params(), gathered, zero_regions_.size(),
                 format_bytes(static_cast<double>(weights_->memory(B_, T_).m_bytes)),
                 format_bytes(static_cast<double>(weights_->memory(B_, T_).v_bytes)));
  }
}

void TrainingRun::check_memory() const {
  GPT::LinearQuantization q;
  q.quantize_activations = cfg_.get_bool("optim.quantize_activations");
  q.quantize_output_grads = cfg_.get_bool("optim.fp8_backward");
  RankLayout layout;
  layout.world = world_;
  layout.ep = ep_;
  layout.zero = cfg_.get_int("dist.zero") == 1 && world_ > 1;
  const MemoryPlan plan =
      plan_memory(mcfg_, optimizer_spec_from(cfg_), q,
                  BackendFootprint{ops_->attention_saved_floats(B_, T_, mcfg_.n_head), cpu_backend_}, B_, T_, layout);
  const MemoryLimit limit = memory_limit();
  check_memory_fits(plan, limit);
  if (limit.bytes && plan.total() > limit.bytes / 10 * 8)
    spdlog::warn("this run needs about {} of the {} that {} allows", format_bytes(static_cast<double>(plan.total())),
                 format_bytes(static_cast<double>(limit.bytes)), limit.source);
}

void TrainingRun::check_run_dir() const {
  const PreviousRun prev = inspect_run_dir(out_dir_);
  if (args_.resume || prev.empty()) return;
  if (args_.overwrite) {
    spdlog::warn("--overwrite: discarding the previous run in {} ({})", out_dir_.string(), prev.describe());
    return;
  }
  throw ConfigError("the run directory " + out_dir_.string() + " already holds a run (" + prev.describe() +
                    "); continue it with --resume, discard it with --overwrite, or choose another --out");
}

std::optional<int64_t> TrainingRun::resume_from_checkpoint() {
  // Anything malformed in the trainer's part of the manifest marks the checkpoint as damaged, so
  // the previous one is tried; a config that differs is the user's choice and stops the run.
  const CheckpointCheck accept = [](const LoadedCheckpoint& ck) {
    const nlohmann::json& format = meta_field(ck, "format", [](const nlohmann::json& j) { return j.is_string(); });
    if (format != kCheckpointFormat) throw CheckpointError(ck.dir.string() + ": unknown checkpoint format " + format.dump());
    const nlohmann::json& config = meta_field(ck, "config", [](const nlohmann::json& j) { return j.is_object(); });
    for (const char* section : {"model", "optim", "train"})
      if (!config.contains(section) || !config[section].is_object())
        throw CheckpointError(ck.dir.string() + ": the stored config has no \"" + section + "\" section");
    meta_field(ck, "bad_steps", [](const nlohmann::json& j) { return j.is_number_unsigned(); });
    if (ck.meta.contains("updates")) meta_field(ck, "updates", [](const nlohmann::json& j) { return j.is_number_unsigned(); });
    if (ck.meta.contains("world"))
      meta_field(ck, "world", [](const nlohmann::json& j) { return j.is_number_unsigned() && j.get<uint64_t>() >= 1; });
    meta_field(ck, "elapsed_s", [](const nlohmann::json& j) { return j.is_number() && j.get<double>() >= 0; });
    LoaderState::from_json(meta_field(ck, "train_loader", [](const nlohmann::json& j) { return j.is_object(); }));
  };
  std::optional<LoadedCheckpoint> ckpt = load_latest_checkpoint(out_dir_, accept);
  if (!ckpt) {
    spdlog::warn("--resume: no checkpoint in {}; starting from scratch", out_dir_.string());
    return std::nullopt;
  }
  const nlohmann::json& meta = ckpt->meta;
  const nlohmann::json& saved = meta["config"];
  // The model and optimizer must match for the continuation to be the same run.
  for (const char* section : {"model", "optim"}) {
    if (saved[section] != cfg_.resolved()[section])
      throw ConfigError(ckpt->dir.string() + ": this run's config differs from the checkpoint's in " +
                        first_difference(saved[section], cfg_.resolved()[section], section) +
                        "; resume with the run's own config (" + (out_dir_ / "config.json").string() + ")");
  }
  for (const char* key : {"seq_len", "grad_accum", "seed"}) {
    const nlohmann::json before = saved["train"].contains(key) ? saved["train"][key] : nlohmann::json();
    if (before != cfg_.resolved()["train"][key] && root_)
      spdlog::warn("resume: train.{} changed from {} to {}; the continuation will not match the original run", key,
                   before.dump(), cfg_.resolved()["train"][key].dump());
  }
  // The loader counts batches of world * batch_size windows (checkpoints before data parallelism:
  // world 1). The same global batch at another world size continues exactly: resuming a 2-rank run
  // of batch_size 4 on 1 rank with batch_size 8 (or on 4 ranks with 2) reads the same windows.
  LoaderState position = LoaderState::from_json(meta["train_loader"]);
  const int64_t saved_world = meta.contains("world") ? meta["world"].get<int64_t>() : 1;
  const nlohmann::json saved_b = saved["train"].contains("batch_size") ? saved["train"]["batch_size"] : nlohmann::json();
  const int64_t saved_global = saved_b.is_number_integer() ? saved_b.get<int64_t>() * saved_world : 0;
  const int64_t global = static_cast<int64_t>(B_) * world_;
  if (saved_global != global) {
    if (root_)
      spdlog::warn("resume: the global batch changed from {} windows ({} ranks x batch_size {}) to {} ({} x {}); the "
                   "continuation will not match the original run",
                   saved_global, saved_world, saved_b.dump(), global, world_, B_);
    // Keep the place in the epoch in windows, rounded up: no window of this epoch is read twice.
    if (saved_global > 0)
      position.batch = (position.batch * static_cast<uint64_t>(saved_global) + static_cast<uint64_t>(global) - 1) /
                       static_cast<uint64_t>(global);
  } else if (saved_world != world_) {
    spdlog::info("resume: {} ranks now, {} when the checkpoint was written; same global batch, same data order",
                 world_, saved_world);
  }
  weights_->load(*ckpt);
  train_loader_->restore(position);
  bad_steps_ = meta["bad_steps"].get<int64_t>();
  // Checkpoints of builds before the count was stored counted every step as an update.
  updates_ = meta.contains("updates") ? meta["updates"].get<int64_t>() : ckpt->step;
  prior_elapsed_s_ = meta["elapsed_s"].get<double>();
  spdlog::info("resumed from {} (step {})", ckpt->dir.string(), ckpt->step);
  return ckpt->step;
}

double TrainingRun::evaluate(int64_t step) {
  val_loader_->reset();
  // Never count a window twice: at most the (global) batches the validation data holds. Each rank
  // evaluates its B windows of each, so the mean over ranks is the loss of one process evaluating
  // the same windows in batches of world*B.
  const uint64_t available = val_loader_->batches_per_epoch();
  const int batches = static_cast<int>(std::min<uint64_t>(cfg_.get_int32("train.eval_batches"), available));
  double total = 0.0;
  for (int i = 0; i < batches; ++i) {
    val_loader_->next_batch(inputs_.data(), targets_.data());
    total += model_->forward(inputs_.data(), targets_.data(), B_, T_);
  }
  comm_.all_reduce_sum(&total, 1);
  const double val_loss = total / (static_cast<double>(batches) * world_);
  record({{"step", step}, {"val_loss", val_loss}});
  spdlog::info("step {:>6} | val loss {:.4f} ({} batches of {} tokens)", step, val_loss, batches,
               static_cast<int64_t>(world_) * B_ * T_);
  return val_loss;
}

void TrainingRun::sample(int64_t step) {
  const int n_new = cfg_.get_int32("train.sample_tokens");
  // Every rank would print the same text; under expert parallelism every rank computes it (the
  // forward needs every expert) and rank 0 prints it.
  if (n_new <= 0 || (!root_ && ep_ == 1)) return;
  // Prompt: the first tokens of the validation set, so every sample starts from the same text.
  val_loader_->reset();
  val_loader_->next_batch(inputs_.data(), targets_.data());
  std::vector<int32_t> prompt(inputs_.begin(), inputs_.begin() + std::min(8, T_));
  std::vector<int32_t> out = sample_tokens(*model_, prompt, n_new, T_, seed_ * 1000003ull + static_cast<uint64_t>(step));
  if (!root_) return;
  auto render = [&](const std::vector<int32_t>& ids) {
    if (tokenizer_) {
      std::vector<uint32_t> u(ids.begin(), ids.end());
      return tokenizer_->decode(u);
    }
    std::string s;
    for (int32_t id : ids) s += std::to_string(id) + " ";
    return s;
  };
  spdlog::info("step {:>6} | sample: [{}]{}", step, render(prompt), render(out));
}

StepScalars TrainingRun::read_scalars() const {
  StepScalars s;
  ops_->copy_to_host(&s, scalars_, sizeof s);
  return s;
}

// A checkpoint must never hold weights an update made non-finite.
void TrainingRun::check_updates_finite() const {
  if (!scalars_) return;
  StepScalars s = read_scalars();
  if (split_updates()) {  // each rank counted its own rows or experts: every rank must see the sum, and stop together
    double bad = static_cast<double>(s.bad_weights);
    comm_.all_reduce_sum(&bad, 1);
    s.bad_weights = static_cast<int64_t>(bad);
  }
  throw_if_bad_update(s);
}

void TrainingRun::throw_if_bad_update(const StepScalars& s) const {
  if (s.bad_weights != 0)
    throw NumericsError("the last update made " + std::to_string(s.bad_weights) + " weights non-finite; the last good "
                        "checkpoint in " + out_dir_.string() + " is untouched");
}

// All ranks hold the same state under data parallelism, so rank 0's checkpoint is the whole of it;
// the others wait for it (and fail with it), so a later failure never leaves a rank ahead of the
// newest checkpoint.
// Under ZeRO-1 every rank takes part (the moments of a row live on its owner only) and rank 0
// writes; write_checkpoint finishes every collective even when rank 0's writing fails.
void TrainingRun::save_checkpoint(int64_t step) {
  check_updates_finite();
  run_collectively(comm_, "writing checkpoint " + std::to_string(step), [&] {
    if (root_ || split_updates()) write_checkpoint(step);
  });
}

void TrainingRun::write_checkpoint(int64_t step) {
  std::unique_ptr<CheckpointWriter> writer;
  if (split_updates()) {
    std::exception_ptr failed;
    if (root_) {
      try {
        writer = std::make_unique<CheckpointWriter>(out_dir_, step);
      } catch (...) {
        failed = std::current_exception();
      }
    }
    weights_->save(writer.get(), comm_);
    if (failed) std::rethrow_exception(failed);
    if (!root_) return;
  } else {
    writer = std::make_unique<CheckpointWriter>(out_dir_, step);
    weights_->save(*writer);
  }
  CheckpointWriter& w = *writer;
  const double elapsed = prior_elapsed_s_ + std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start_).count();
  w.set_meta({{"format", kCheckpointFormat},
              {"step", step},
              {"train_loader", train_loader_->state().to_json()},
              {"world", world_},  // the loader's batches are of world * batch_size windows
              {"bad_steps", bad_steps_},
              {"updates", updates_},
              {"elapsed_s", elapsed},
              {"config", cfg_.resolved()}});
  std::filesystem::path dir = w.commit();
  // During a non-finite streak the newest checkpoint written before it is kept as well, so a run
  // that goes on to diverge never prunes the state it could be restarted from.
  prune_checkpoints(out_dir_, cfg_.get_int32("train.keep_checkpoints"), [](const nlohmann::json& meta) {
    const auto it = meta.find("bad_steps");
    return it != meta.end() && it->is_number_integer() && it->get<int64_t>() == 0;
  });
  if (bad_steps_ > 0)
    spdlog::warn("step {:>6} | checkpoint {} written during {} non-finite step(s); the last checkpoint before them is kept",
                 step, dir.string(), bad_steps_);
  else spdlog::info("step {:>6} | checkpoint {}", step, dir.string());
}

void TrainingRun::log_step(int64_t step, float loss, double lr, double norm, double step_seconds) {
  const double tokens = static_cast<double>(global_batch_tokens());  // all ranks together
  const double tok_per_s = tokens / step_seconds;
  nlohmann::json r = {{"step", step}, {"train_loss", loss}, {"lr", lr}, {"grad_norm", norm}, {"tokens_per_s", tok_per_s}};
  if (!moe_stats_.empty()) r["moe"] = moe_stats_json(moe_stats_);
  record(r);
  const int64_t every = cfg_.get_int("log.every");
  if (step % every != 0 && step != steps_) return;
  const double elapsed = prior_elapsed_s_ + std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start_).count();
  const double eta = train_seconds_ / static_cast<double>(steps_this_run_) * static_cast<double>(steps_ - step);
  const std::string moe = moe_console_summary(moe_stats_);
  spdlog::info("step {:>6}/{} | loss {:.4f} | lr {:.2e} | norm {:.3f} | {}{:.0f} tok/s | {} elapsed, ETA {}", step,
               steps_, loss, lr, norm, moe.empty() ? "" : moe + " | ", tok_per_s, format_duration(elapsed),
               format_duration(eta));
}

std::vector<MoeLayerStats> TrainingRun::moe_step_totals(MoeTotals* totals) {
  *totals = model_->read_moe_totals();
  if (totals->values.empty()) return {};
  comm_.all_reduce_sum(totals->values.data(), totals->values.size());
  return GPT::moe_stats(model_->config(), *totals);
}

// ECO_TEST_FAULT=KIND:STEP makes the last rank fail in step STEP, for tests/test_data_parallel*.cpp:
// kill (SIGKILL: a rank that dies), stall (stops answering: the others time out), signal (SIGTERM:
// a stop request that reached one rank only) or nan (a non-finite gradient on that rank only).
void TrainingRun::inject_test_fault(int64_t step) const {
  const char* spec = std::getenv("ECO_TEST_FAULT");
  if (spec == nullptr || comm_.rank() != world_ - 1) return;
  const std::string s = spec;
  const size_t colon = s.find(':');
  if (colon == std::string::npos || std::to_string(step) != s.substr(colon + 1)) return;
  const std::string kind = s.substr(0, colon);
  spdlog::warn("ECO_TEST_FAULT: {} at step {}", kind, step);
  if (kind == "kill") std::raise(SIGKILL);
  if (kind == "signal") std::raise(SIGTERM);
  if (kind == "stall")
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  if (kind == "nan") {
    const float nan = std::nanf("");
    ops_->copy_from_host(model_->grads(), &nan, sizeof nan);
  }
}

int TrainingRun::execute() {
  // Nothing in the run directory changes until the config is validated, the memory fits and, on
  // --resume, a checkpoint is accepted (run_dir.h has the rules). Only rank 0 touches the run
  // directory; every step that can fail on some ranks only is agreed on (run_collectively), so a
  // failure anywhere ends every rank with the same exit code instead of a wait for the timeout.
  run_collectively(comm_, "checking the run directory " + out_dir_.string(), [&] {
    if (!root_) return;
    lock_ = std::make_unique<RunDirLock>(out_dir_);
    check_run_dir();
  });
  run_collectively(comm_, "setting up the model and data", [&] { setup(); });
  print_plan();

  std::optional<int64_t> resumed_at;
  if (args_.resume) run_collectively(comm_, "loading the checkpoint", [&] { resumed_at = resume_from_checkpoint(); });
  // Every rank reads the checkpoint itself, so log.dir must be the same directory on every node.
  require_same_on_all_ranks(comm_, resumed_at.value_or(-1), "the step resumed from (-1: none)",
                            "log.dir must be one directory that every node sees (a shared filesystem)");
  run_collectively(comm_, "preparing the run directory", [&] {
    if (!root_) return;
    if (args_.overwrite) discard_previous_run(out_dir_);
    atomic_write_file(out_dir_ / "config.json", cfg_.dump() + "\n");
    // Starting from scratch (even under --resume) drops every record of an earlier attempt.
    metrics_ = std::make_unique<MetricsWriter>(out_dir_, resumed_at.value_or(-1));
  });
  const int64_t start_step = resumed_at.value_or(0);
  run_start_ = std::chrono::steady_clock::now();

  const int64_t eval_every = cfg_.get_int("train.eval_every");
  const int64_t ckpt_every = cfg_.get_int("train.checkpoint_every");
  const int64_t max_bad = cfg_.get_int("train.max_bad_steps");
  const size_t n = model_->num_params();
  const double clip = cfg_.get_float("optim.grad_clip");
  if (!resumed_at) {
    record({{"step", 0}, {"memory", weights_->memory(B_, T_).to_json()}});
    evaluate(0);
    sample(0);
  }
  if (const int sig = first_nonzero_over_ranks(comm_, g_stop_signal.load()); sig != 0 && start_step < steps_) {
    // Stopped before the first step: the initial state is a checkpoint too, so --resume continues
    // exactly as an uninterrupted run would.
    if (!resumed_at) save_checkpoint(0);
    if (root_) spdlog::warn("stopping before step {} (signal received); continue with --resume", start_step + 1);
    return 128 + sig;
  }

  scalars_ = static_cast<StepScalars*>(ops_->alloc(sizeof(StepScalars)));
  ops_->fill_zero(scalars_, sizeof(StepScalars));
  // The gradient of the mean loss over the global batch: each rank's backward scales by
  // 1/(accum * world) and the all-reduce sums the ranks.
  const float loss_scale = 1.0f / static_cast<float>(accum_ * world_);
  for (int64_t step = start_step + 1; step <= steps_; ++step) {
    auto t0 = std::chrono::steady_clock::now();
    model_->zero_grad();
    model_->reset_moe_totals();
    ops_->fill_zero(scalars_, offsetof(StepScalars, bad_weights));  // loss and norm; the flag persists
    const uint64_t rows_before = expert_exchange_ ? expert_exchange_->row_bytes_sent() : 0;
    for (int micro = 0; micro < accum_; ++micro) {
      train_loader_->next_batch(inputs_.data(), targets_.data());
      model_->forward_accumulate_loss(inputs_.data(), targets_.data(), B_, T_, &scalars_->loss_sum);
      model_->backward(loss_scale);
    }
    if (expert_exchange_) expert_rows_sent_ += expert_exchange_->row_bytes_sent() - rows_before;
    inject_test_fault(step);
    const uint64_t sent_before = grad_comm_->bytes_sent();
    StepScalars s;
    if (zero_) {
      // ZeRO-1: each rank sums (and squares) only its own range; the sums over ranks make the norm,
      // the clip, a non-finite value anywhere and the weights an update broke every rank's.
      zero_->reduce_scatter(model_->grads());
      grad_bytes_sent_ += grad_comm_->bytes_sent() - sent_before;
      ops_->accumulate_sum_squares(&scalars_->grad_norm_sq, model_->grads() + zero_->own_begin(), zero_->own_count());
      s = read_scalars();  // the step's one host read
      double sums[3] = {s.loss_sum, s.grad_norm_sq, static_cast<double>(s.bad_weights)};
      comm_.all_reduce_sum(sums, 3);
      s.loss_sum = sums[0];
      s.grad_norm_sq = sums[1];
      s.bad_weights = static_cast<int64_t>(sums[2]);
    } else if (ep_ > 1) {
      // Expert parallelism: the tensors every rank holds are summed over the world, each expert
      // over its replicas; the norm is theirs plus the experts' squares summed over the group.
      const size_t common = model_->expert_param_begin();
      grad_sync_->all_reduce(model_->grads(), common);
      if (expert_grad_sync_) expert_grad_sync_->all_reduce(model_->grads() + common, n - common);
      grad_bytes_sent_ += grad_comm_->bytes_sent() - sent_before;
      ops_->accumulate_sum_squares(&scalars_->grad_norm_sq, model_->grads(), common);
      ops_->accumulate_sum_squares(&scalars_->expert_norm_sq, model_->grads() + common, n - common);
      s = read_scalars();  // the step's one host read
      ep_host_.experts->all_reduce_sum(&s.expert_norm_sq, 1);
      s.grad_norm_sq += s.expert_norm_sq;
      double sums[2] = {s.loss_sum, static_cast<double>(s.bad_weights)};
      comm_.all_reduce_sum(sums, 2);
      s.loss_sum = sums[0];
      s.bad_weights = static_cast<int64_t>(sums[1]);
    } else {
      grad_sync_->all_reduce(model_->grads(), n);
      grad_bytes_sent_ += grad_comm_->bytes_sent() - sent_before;
      // After the sum: the norm (and so the clip and a non-finite gradient anywhere) is every rank's.
      ops_->accumulate_sum_squares(&scalars_->grad_norm_sq, model_->grads(), n);
      s = read_scalars();  // the step's one host read
      comm_.all_reduce_sum(&s.loss_sum, 1);  // a non-finite loss on any rank is non-finite on all
    }
    MoeTotals moe_totals;
    moe_stats_ = moe_step_totals(&moe_totals);
    throw_if_bad_update(s);
    const float loss = static_cast<float>(s.loss_sum / (static_cast<double>(accum_) * world_));
    const double norm = std::sqrt(s.grad_norm_sq);
    const double lr = schedule_.lr_at(step - 1);
    if (!std::isfinite(loss) || !std::isfinite(norm)) {
      ++bad_steps_;
      record({{"step", step}, {"train_loss", loss}, {"grad_norm", norm}, {"skipped", true}});
      if (root_)
        spdlog::warn("step {}: loss {} / grad norm {} is not finite; update skipped ({} in a row)", step, loss, norm,
                     bad_steps_);
      if (bad_steps_ > max_bad)
        throw NumericsError("training diverged: " + std::to_string(bad_steps_) +
                            " consecutive non-finite steps (train.max_bad_steps = " + std::to_string(max_bad) +
                            "); the last good checkpoint in " + out_dir_.string() + " is untouched");
    } else {
      bad_steps_ = 0;
      weights_->step(static_cast<float>(lr), ++updates_, clip_factor(norm, clip), &scalars_->bad_weights);
      if (zero_) {  // every rank's updated rows to every rank: the next forward needs the whole model
        const uint64_t before = grad_comm_->bytes_sent();
        zero_->all_gather(zero_regions_);
        gather_bytes_sent_ += grad_comm_->bytes_sent() - before;
        ++updates_this_run_;
      }
      model_->update_expert_bias(moe_totals, model_->config().moe.bias_update_rate);
    }
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    train_seconds_ += dt;
    ++steps_this_run_;
    if (std::isfinite(norm) && std::isfinite(loss)) log_step(step, loss, lr, norm, dt);

    if ((eval_every > 0 && step % eval_every == 0) || step == steps_) {
      evaluate(step);
      sample(step);
    }
    // A signal that reached any rank stops all of them here, at the same step.
    const int sig = first_nonzero_over_ranks(comm_, g_stop_signal.load());
    const bool stop_now = sig != 0 || (args_.stop_after > 0 && steps_this_run_ >= args_.stop_after);
    if ((ckpt_every > 0 && step % ckpt_every == 0) || step == steps_ || stop_now) save_checkpoint(step);
    if (stop_now && step < steps_) {
      if (root_)
        spdlog::warn("stopping at step {} ({}); continue with --resume", step,
                     sig ? "signal received" : "--stop-after reached");
      return sig ? 128 + sig : 0;
    }
  }
  if (!args_.export_llmc.empty()) {
    run_collectively(comm_, "exporting " + args_.export_llmc, [&] {
      if (root_) weights_->export_llmc(args_.export_llmc);
    });
    spdlog::info("exported llm.c checkpoint {}", args_.export_llmc);
  }
  spdlog::info("done: {} steps, {:.0f} tok/s on average this run", steps_,
               static_cast<double>(global_batch_tokens()) * steps_this_run_ / std::max(train_seconds_, 1e-9));
  if (zero_ && steps_this_run_ > 0 && updates_this_run_ > 0) {
    // Rank 0's own figures, then the sums over the ranks (a rank's all-gather block is its share of
    // the stored bytes, which differ per parameter: 1 per FP8 code, 4 per fp32 weight).
    spdlog::info("ZeRO-1: rank 0 sent {} bytes per step: reduce-scatter {} (4 x (P - {} owned), P = {}), all-gather {} "
                 "((W-1) x its block), {} bytes in all",
                 (grad_bytes_sent_ + gather_bytes_sent_) / static_cast<uint64_t>(steps_this_run_),
                 grad_bytes_sent_ / static_cast<uint64_t>(steps_this_run_), zero_->own_count(), n,
                 gather_bytes_sent_ / static_cast<uint64_t>(updates_this_run_), comm_.bytes_sent());
    double sums[2] = {static_cast<double>(grad_bytes_sent_), static_cast<double>(gather_bytes_sent_)};
    comm_.all_reduce_sum(sums, 2);
    size_t stored = 0;
    for (const GatherRegion& g : zero_regions_)
      for (size_t b : g.bytes) stored += b;
    spdlog::info("ZeRO-1: the {} ranks together sent {:.0f} bytes per step in reduce-scatters (4 x (W-1) x P) and {:.0f} "
                 "in all-gathers ((W-1) x {} stored bytes)",
                 world_, sums[0] / static_cast<double>(steps_this_run_), sums[1] / static_cast<double>(updates_this_run_),
                 stored);
  } else if (ep_ > 1 && steps_this_run_ > 0) {
    spdlog::info("expert parallel: rank 0 sent {} gradient bytes and {} bytes of token rows (the all-to-alls of "
                 "forward and backward) per step, {} bytes in all",
                 grad_bytes_sent_ / static_cast<uint64_t>(steps_this_run_),
                 expert_rows_sent_ / static_cast<uint64_t>(steps_this_run_), comm_.bytes_sent());
  } else if (world_ > 1 && steps_this_run_ > 0)
    spdlog::info("data parallel: rank 0 sent {} gradient bytes per step (2(W-1)/W x 4 x {} params), {} bytes in all",
                 grad_bytes_sent_ / static_cast<uint64_t>(steps_this_run_), n, comm_.bytes_sent());
  return 0;
}

}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND | SA_RESTART;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
}

int run_training(const Config& cfg, const CliArgs& args, Communicator& comm) {
  install_stop_handlers();
  TrainingRun run(cfg, args, comm);
  return run.execute();
}

}  // namespace eco
