// Device residency (DESIGN.md §2), checked on the CPU: eco_train runs on the guarded CPU backend
// (ECO_BACKEND_GUARD=1, src/cpu/guarded_ops.h), whose buffers are inaccessible outside its own ops,
// so any host code that dereferences backend memory (trainer, model, optimizer, checkpoints,
// sampling, llm.c export) crashes instead of passing (a sampler that read the logits in place did).
// Five modes that cover every path of the step, evaluation, sampling, checkpoint, resume and
// export go through it, and the guarded run must give the same losses as the plain one.
#include <catch2/catch.hpp>

#include "train_fixture.h"

using namespace eco_test;

namespace {
std::vector<std::string> records(const std::filesystem::path& run_dir) {
  std::vector<std::string> out;
  for (auto rec : read_metrics(run_dir)) {
    rec.erase("tokens_per_s");
    out.push_back(rec.dump());
  }
  return out;
}
}  // namespace

TEST_CASE("no host code dereferences backend memory, in any mode", "[residency]") {
  struct Variant {
    const char* mode;
    const char* extra;
  };
  // Between them every path of the step: fp32 values, masters with 128x128 scales and bf16 states,
  // master-free SR with ECO, SGDM and FP8 output gradients, per-tensor scales, BF16 codes.
  const Variant variants[] = {{"fp32", ""},
                              {"master", " --set optim.scaling=block128 --set optim.state_format=bf16"},
                              {"eco_sr", " --set optim.optimizer=sgdm --set optim.fp8_backward=true"},
                              {"eco", " --set optim.scaling=tensor"},
                              {"bf16_sr", ""}};
  for (const Variant& v : variants) {
    INFO(v.mode << v.extra);
    TinyRun r(std::string("residency_") + v.mode);
    r.config["optim"]["mode"] = v.mode;
    r.config["train"]["steps"] = 6;
    r.config["train"]["eval_every"] = 3;
    r.config["train"]["eval_batches"] = 1;
    r.config["train"]["sample_tokens"] = 4;
    r.config["train"]["checkpoint_every"] = 3;
    r.write_config();
    const std::string cmd = eco_train_bin() + " --config " + (r.dir / "config.json").string() + v.extra;
    REQUIRE(run_command(cmd + " --out " + (r.dir / "plain").string(), r.dir / "plain.txt") == 0);
    const std::string guarded = "ECO_BACKEND_GUARD=1 " + cmd + " --out " + (r.dir / "guarded").string();
    REQUIRE(run_command(guarded + " --stop-after 4", r.dir / "guarded1.txt") == 0);
    REQUIRE(read_text(r.dir / "guarded1.txt").find("backend guarded cpu") != std::string::npos);
    REQUIRE(run_command(guarded + " --resume --export-llmc " + (r.dir / "model.bin").string(), r.dir / "guarded2.txt") == 0);
    CHECK(records(r.dir / "guarded") == records(r.dir / "plain"));
    CHECK(std::filesystem::file_size(r.dir / "model.bin") > 0);
  }
}
