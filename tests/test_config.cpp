// Config loading and validation: defaults, every class of error (exit code 2, one line, full key
// path), did-you-mean, --set overrides, rules across keys, round trips, and docs/config.md.
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <set>
#include <string>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/error.h"
#include "test_util.h"
#include "train/cli.h"
#include "train/config_schema.h"

using nlohmann::json;
using eco::Config;

namespace {

// Two existing shard files, so data.train / data.val (required, must exist) can be satisfied.
struct Shards {
  std::filesystem::path dir = eco_test::scratch_dir("config_shards");
  std::string train = (dir / "train.bin").string();
  std::string val = (dir / "val.bin").string();
  Shards() {
    std::ofstream(train) << "x";
    std::ofstream(val) << "x";
    std::ofstream(dir / "val_001.bin") << "x";
  }
  json base() const { return {{"data", {{"train", train}, {"val", val}}}}; }
};

Config resolve(const json& j, const std::vector<std::string>& overrides = {}) {
  return Config::from_json(j, overrides, eco::eco_train_schema());
}

// The message of the ConfigError `f` throws; fails the test when it throws nothing or another type.
std::string config_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const eco::ConfigError& e) {
    CHECK(e.exit_code() == 2);
    const std::string msg = e.what();
    CHECK(msg.find('\n') == std::string::npos);  // one line
    CHECK(msg.rfind("config error: ", 0) == 0);
    return msg;
  }
  FAIL("no ConfigError thrown");
  return "";
}

// The message of any ConfigError `f` throws (flag errors have no "config error: " prefix).
std::string config_error_any(const std::function<void()>& f) {
  try {
    f();
  } catch (const eco::ConfigError& e) {
    return e.what();
  }
  FAIL("no ConfigError thrown");
  return "";
}

std::string resolve_error(const json& j, const std::vector<std::string>& overrides = {}) {
  return config_error([&] { resolve(j, overrides); });
}

std::string write_file(const std::string& name, const std::string& text) {
  auto p = eco_test::scratch_dir("config_files") / name;
  std::ofstream(p) << text;
  return p.string();
}

}  // namespace

TEST_CASE("defaults resolve to the documented values") {
  Shards s;
  Config c = resolve(s.base());
  // Written out from the specification, independently of the schema table.
  const json expected = json::parse(R"({
    "model": {"arch": "gpt2", "vocab_size": 50257, "padded_vocab": 0, "n_layer": 4, "n_head": 4, "d_model": 256,
              "max_seq_len": 1024, "mlp_hidden": 0, "tied_head": true, "rope_theta": 10000.0, "init_std": 0.02,
              "norm_eps": 1e-5, "init_from": ""},
    "moe": {"experts": 0, "top_k": 2, "first_layer": 0, "every": 1, "expert_hidden": 0, "activation": "auto",
            "shared_expert": false, "capacity_factor": 0.0, "renormalize": true, "aux_loss_coef": 0.01,
            "z_loss_coef": 0.0, "bias_update_rate": 0.0, "quantize_dense_linears": false},
    "data": {"tokenizer": "gpt2", "tokenizer_dir": "data/tokenizer", "shuffle": true},
    "optim": {"mode": "fp32", "optimizer": "adamw", "lr": 6e-4, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8,
              "weight_decay": 0.1, "grad_clip": 1.0, "schedule": "cosine", "warmup_steps": -1, "warmup_ratio": 0.1,
              "warmup_init_ratio": 0.01, "final_lr_ratio": 0.1, "weight_format": "e4m3", "scaling": "row",
              "pow2_scales": false, "group_size": 128, "lowbit_scale": "row", "scale_dtype": "fp32",
              "state_format": "fp32", "beta1_from_state_format": true, "fp8_backward": false,
              "quantize_activations": true},
    "train": {"steps": 1000, "batch_size": 8, "seq_len": 128, "grad_accum": 1, "eval_every": 100, "eval_batches": 8,
              "sample_tokens": 64, "seed": 1337, "checkpoint_every": 0, "keep_checkpoints": 2, "device": "cpu", "threads": 0,
              "max_bad_steps": 5},
    "dist": {"zero": 0, "ep": 1},
    "log": {"dir": "runs/default", "every": 1}
  })");
  json got = c.resolved();
  CHECK(got["data"]["train"] == s.train);
  CHECK(got["data"]["val"] == s.val);
  got["data"].erase("train");
  got["data"].erase("val");
  CHECK(got == expected);

  CHECK(c.get_int("model.n_layer") == 4);
  CHECK(c.get_float("optim.lr") == 6e-4);
  CHECK(c.get_float("model.n_layer") == 4.0);  // ints read as floats too
  CHECK(c.get_bool("model.tied_head"));
  CHECK(c.get_string("optim.mode") == "fp32");
  CHECK(c.get_string("log.dir") == "runs/default");
  CHECK(c.resolved()["model"]["rope_theta"].is_number_float());
  CHECK(c.resolved()["train"]["steps"].is_number_integer());
  CHECK(json::parse(c.dump()) == c.resolved());
}

TEST_CASE("asking for a missing key or the wrong type is a programming error") {
  Shards s;
  Config c = resolve(s.base());
  CHECK_THROWS_AS(c.get_int("train.nope"), std::logic_error);
  CHECK_THROWS_AS(c.get_int("optim.lr"), std::logic_error);
  CHECK_THROWS_AS(c.get_string("train.steps"), std::logic_error);
  CHECK_THROWS_AS(c.get_bool("model.arch"), std::logic_error);
}

TEST_CASE("out-of-range and wrong-type values name the key and what was expected") {
  Shards s;
  json j = s.base();
  j["optim"]["lr"] = -1;
  CHECK(resolve_error(j) == "config error: optim.lr: expected a number > 0, got -1");

  j = s.base();
  j["train"]["steps"] = "ten";
  CHECK(resolve_error(j) == "config error: train.steps: expected an integer in [1, 1000000000000], got \"ten\"");

  j = s.base();
  j["train"]["steps"] = 2.5;
  CHECK(resolve_error(j) == "config error: train.steps: expected an integer in [1, 1000000000000], got 2.5");

  j = s.base();
  j["data"]["shuffle"] = "yes";
  CHECK(resolve_error(j) == "config error: data.shuffle: expected true or false, got \"yes\"");

  j = s.base();
  j["model"]["arch"] = "gpt3";
  CHECK(resolve_error(j) == "config error: model.arch: expected one of \"gpt2\", \"llama\", got \"gpt3\"");

  j = s.base();
  j["model"] = 3;
  CHECK(resolve_error(j).find("config error: model: expected an object") == 0);

  j = s.base();
  j["log"]["dir"] = 5;
  CHECK(resolve_error(j) == "config error: log.dir: expected a path (string), got 5");
}

TEST_CASE("range bounds are inclusive or exclusive as documented") {
  Shards s;
  auto ok = [&](const std::string& kv) {
    CHECK_NOTHROW(resolve(s.base(), {kv}));
  };
  auto bad = [&](const std::string& kv, const std::string& msg) { CHECK(resolve_error(s.base(), {kv}) == msg); };
  ok("optim.beta1=0");
  bad("optim.beta1=1", "config error: optim.beta1: expected a number in [0, 1), got 1");
  ok("optim.warmup_ratio=1");
  bad("optim.warmup_ratio=1.5", "config error: optim.warmup_ratio: expected a number in [0, 1], got 1.5");
  ok("model.vocab_size=1048576");
  bad("model.vocab_size=1048577", "config error: model.vocab_size: expected an integer in [2, 1048576], got 1048577");
  bad("model.vocab_size=1", "config error: model.vocab_size: expected an integer in [2, 1048576], got 1");
  ok("optim.warmup_steps=-1");
  bad("optim.warmup_steps=-2", "config error: optim.warmup_steps: expected an integer in [-1, 1000000000000], got -2");
  ok("optim.weight_decay=0");
  bad("optim.eps=0", "config error: optim.eps: expected a number > 0, got 0");
  ok("train.eval_every=0");
  bad("train.keep_checkpoints=0", "config error: train.keep_checkpoints: expected an integer in [1, 2147483647], got 0");
}

TEST_CASE("an integral float is accepted for an int key") {
  Shards s;
  json j = s.base();
  j["train"]["steps"] = 1e3;
  Config c = resolve(j);
  CHECK(c.get_int("train.steps") == 1000);
  CHECK(c.resolved()["train"]["steps"].is_number_integer());
}

TEST_CASE("unknown keys are rejected with a suggestion") {
  Shards s;
  json j = s.base();
  j["train"]["stpes"] = 5;
  CHECK(resolve_error(j) == "config error: unknown key \"train.stpes\" (did you mean \"train.steps\"?)");

  j = s.base();
  j["trian"] = {{"steps", 5}};
  CHECK(resolve_error(j) == "config error: unknown key \"trian\" (did you mean \"train\"?)");

  j = s.base();
  j["train"]["lr"] = 1e-3;  // right name, wrong section
  CHECK(resolve_error(j) == "config error: unknown key \"train.lr\" (did you mean \"optim.lr\"?)");

  j = s.base();
  j["model"]["weird_thing"] = 1;
  std::string msg = resolve_error(j);
  CHECK(msg.find("unknown key \"model.weird_thing\"") != std::string::npos);
  CHECK(msg.find("did you mean") == std::string::npos);
}

TEST_CASE("suggest_key picks the nearest key or nothing") {
  const std::vector<std::string> keys = {"train.steps", "train.seed", "optim.lr", "optim.eps", "train", "optim"};
  CHECK(eco::suggest_key("train.stpes", keys) == "train.steps");
  CHECK(eco::suggest_key("train.sed", keys) == "train.seed");
  CHECK(eco::suggest_key("optm", keys) == "optim");
  CHECK(eco::suggest_key("model.lr", keys) == "optim.lr");
  CHECK(eco::suggest_key("banana.split", keys) == "");
}

TEST_CASE("input paths must exist; globs must match; output paths are not checked") {
  Shards s;
  json j = s.base();
  j["data"]["train"] = (s.dir / "trian.bin").string();
  const std::string msg = resolve_error(j);
  CHECK(msg.find("config error: data.train: no file matches \"" + (s.dir / "trian.bin").string() + "\"") == 0);

  j = s.base();
  j["data"]["val"] = (s.dir / "val_*.bin").string();
  CHECK_NOTHROW(resolve(j));
  j["data"]["val"] = (s.dir / "test_*.bin").string();
  CHECK(resolve_error(j).find("config error: data.val: no file matches") == 0);

  j = s.base();
  j["data"].erase("train");
  CHECK(resolve_error(j).find("config error: data.train: required") == 0);

  j = s.base();
  j["model"]["init_from"] = (s.dir / "missing_model.bin").string();
  CHECK(resolve_error(j).find("config error: model.init_from: no file matches") == 0);

  j = s.base();
  j["log"]["dir"] = (s.dir / "does/not/exist/yet").string();
  j["data"]["tokenizer_dir"] = (s.dir / "no_tokenizer_here").string();  // lenient by design
  CHECK_NOTHROW(resolve(j));
}

TEST_CASE("relative paths resolve from the current directory") {
  Shards s;
  const auto old = std::filesystem::current_path();
  std::filesystem::current_path(s.dir);
  json j = {{"data", {{"train", "train.bin"}, {"val", "val.bin"}}}};
  CHECK_NOTHROW(resolve(j));
  j["data"]["train"] = "nope.bin";
  const std::string msg = resolve_error(j);
  std::filesystem::current_path(old);
  CHECK(msg.find("relative paths are resolved from the current directory") != std::string::npos);
}

TEST_CASE("--set overrides parse ints, floats, bools and strings, in order, over the file") {
  Shards s;
  json j = s.base();
  j["train"]["steps"] = 10;
  Config c = resolve(j, {"train.steps=50", "optim.lr=3e-4", "data.shuffle=false", "model.arch=llama",
                         "log.dir=runs/x y", "train.seed=7", "train.seed=8", "optim.mode=\"eco\"", " log.every =3"});
  CHECK(c.get_int("train.steps") == 50);
  CHECK(c.get_float("optim.lr") == 3e-4);
  CHECK_FALSE(c.get_bool("data.shuffle"));
  CHECK(c.get_string("model.arch") == "llama");
  CHECK(c.get_string("log.dir") == "runs/x y");
  CHECK(c.get_int("train.seed") == 8);
  CHECK(c.get_string("optim.mode") == "eco");
  CHECK(c.get_int("log.every") == 3);
  // A string key takes the text as given even when it would parse as another JSON type.
  CHECK(resolve(s.base(), {"log.dir=123"}).get_string("log.dir") == "123");
  CHECK(resolve(s.base(), {"log.dir=true"}).get_string("log.dir") == "true");
  // An int given to a float key is stored as a float.
  CHECK(resolve(s.base(), {"optim.lr=1"}).resolved()["optim"]["lr"].is_number_float());
}

TEST_CASE("--set with a wrong type, an unknown key or bad syntax is a config error") {
  Shards s;
  CHECK(resolve_error(s.base(), {"train.steps=abc"}) == "config error: train.steps: expected an integer in [1, 1000000000000], got \"abc\"");
  CHECK(resolve_error(s.base(), {"data.shuffle=1"}) == "config error: data.shuffle: expected true or false, got 1");
  CHECK(resolve_error(s.base(), {"optim.lr=fast"}) == "config error: optim.lr: expected a number > 0, got \"fast\"");
  CHECK(resolve_error(s.base(), {"optim.lrr=1"}) ==
        "config error: --set optim.lrr=1: unknown key \"optim.lrr\" (did you mean \"optim.lr\"?)");
  CHECK(resolve_error(s.base(), {"optim.lr"}).find("expected KEY=VALUE") != std::string::npos);
  CHECK(resolve_error(s.base(), {"model=3"}).find("\"model\" is a section") != std::string::npos);
  CHECK(resolve_error(s.base(), {"model.arch=3"}) ==
        "config error: model.arch: expected one of \"gpt2\", \"llama\", got \"3\"");
}

TEST_CASE("rules across keys") {
  Shards s;
  CHECK(resolve_error(s.base(), {"model.d_model=100", "model.n_head=3"}) ==
        "config error: model.d_model: 100 is not divisible by model.n_head (3)");
  CHECK(resolve_error(s.base(), {"train.seq_len=2048"}).find("config error: train.seq_len: 2048 exceeds model.max_seq_len (1024)") == 0);
  CHECK_NOTHROW(resolve(s.base(), {"train.seq_len=1024"}));
  CHECK(resolve_error(s.base(), {"model.tied_head=false"}).find("config error: model.tied_head:") == 0);
  CHECK_NOTHROW(resolve(s.base(), {"model.tied_head=false", "model.arch=llama"}));
  // d_model 24 / 8 heads = head dim 3: fine for gpt2, odd for RoPE.
  CHECK_NOTHROW(resolve(s.base(), {"model.d_model=24", "model.n_head=8"}));
  CHECK(resolve_error(s.base(), {"model.d_model=24", "model.n_head=8", "model.arch=llama"}).find("config error: model.n_head:") == 0);
  CHECK(resolve_error(s.base(), {"model.padded_vocab=50000"}) ==
        "config error: model.padded_vocab: expected 0 or a value >= model.vocab_size (50257), got 50000");
  CHECK_NOTHROW(resolve(s.base(), {"model.padded_vocab=50304"}));
  CHECK(resolve_error(s.base(), {"train.steps=10", "optim.warmup_steps=11"}) ==
        "config error: optim.warmup_steps: 11 exceeds train.steps (10)");
}

TEST_CASE("config files: missing, unreadable, invalid JSON, comments") {
  Shards s;
  const auto& schema = eco::eco_train_schema();
  std::string msg = config_error([&] { Config::load("/nonexistent/dir/cfg.json", {}, schema); });
  CHECK(msg.find("/nonexistent/dir/cfg.json") != std::string::npos);
  CHECK(msg.find("no such file") != std::string::npos);

  msg = config_error([&] { Config::load(s.dir.string(), {}, schema); });
  CHECK(msg.find("is a directory") != std::string::npos);

  const std::string bad = write_file("bad.json", "{\n  \"train\": {\"steps\": 10},\n  \"optim\": {\"lr\": }\n}\n");
  msg = config_error([&] { Config::load(bad, {}, schema); });
  CHECK(msg.find(bad + ": not valid JSON: parse error at line 3, column") != std::string::npos);

  const std::string arr = write_file("array.json", "[1, 2]");
  CHECK(config_error([&] { Config::load(arr, {}, schema); }).find("expected a JSON object") != std::string::npos);

  const std::string good = write_file("good.json", "// a comment\n{\"data\": {\"train\": \"" + s.train + "\", \"val\": \"" +
                                                       s.val + "\"}, /* inline */ \"train\": {\"steps\": 20}}\n");
  Config c = Config::load(good, {"train.batch_size=3"}, schema);
  CHECK(c.get_int("train.steps") == 20);
  CHECK(c.get_int("train.batch_size") == 3);
}

TEST_CASE("the resolved config round-trips unchanged") {
  Shards s;
  json j = s.base();
  j["optim"] = {{"mode", "eco_sr"}, {"lr", 1}, {"beta2", 0.98}};
  j["train"] = {{"steps", 1e4}};
  Config c = resolve(j, {"model.arch=llama", "model.tied_head=false", "optim.eps=1e-9"});
  Config again = resolve(c.resolved());
  CHECK(again.resolved() == c.resolved());
  CHECK(again.dump() == c.dump());
  const std::string path = write_file("resolved.json", c.dump());
  CHECK(Config::load(path, {}, eco::eco_train_schema()).resolved() == c.resolved());
}

TEST_CASE("the mechanism handles nested sections and custom schemas") {
  eco::Schema schema;
  schema.sections = {{"a", "section a"}};
  schema.entries = {eco::int_key("a.b.c", 3, eco::Range::closed(0, 9), "deep"),
                    eco::string_key("a.name", "x", "free text"),
                    eco::out_path_key("a.out", "nowhere/at/all", "output")};
  schema.cross_checks = {{"a.name is not \"bad\"", [](const Config& c) {
                            if (c.get_string("a.name") == "bad") eco::throw_config_error("a.name", "must not be bad");
                          }}};
  Config c = Config::from_json(json::object(), {"a.b.c=7"}, schema);
  CHECK(c.get_int("a.b.c") == 7);
  CHECK(c.get_string("a.out") == "nowhere/at/all");
  CHECK(config_error([&] { Config::from_json({{"a", {{"b", {{"d", 1}}}}}}, {}, schema); }) ==
        "config error: unknown key \"a.b.d\" (did you mean \"a.b.c\"?)");
  CHECK(config_error([&] { Config::from_json(json::object(), {"a.name=bad"}, schema); }) ==
        "config error: a.name: must not be bad");
  CHECK(config_error([&] { Config::from_json({{"a", {{"b", 1}}}}, {}, schema); }).find("config error: a.b: expected an object") == 0);
}

TEST_CASE("help text and markdown list every key") {
  const auto& schema = eco::eco_train_schema();
  const std::string text = eco::schema_help_text(schema);
  const std::string md = eco::schema_markdown(schema);
  for (const auto& e : schema.entries) {
    CHECK(text.find(e.key + " = ") != std::string::npos);
    CHECK(md.find("| `" + e.key + "` |") != std::string::npos);
  }
  CHECK(md.find("| `optim.beta1` | float | `0.9` | in [0, 1) |") != std::string::npos);
  CHECK(text.find("model.arch = \"gpt2\"   (enum: gpt2, llama)") != std::string::npos);
}

// docs/config.md is generated from the schema; this fails when it is stale.
// Regenerate with: ECO_UPDATE_DOCS=1 build/tests/test_config "[docs]"
TEST_CASE("docs/config.md matches the schema", "[docs]") {
  const auto path = eco_test::source_dir() / "docs" / "config.md";
  const std::string want = eco::eco_train_config_markdown();
  if (const char* up = std::getenv("ECO_UPDATE_DOCS"); up && std::string(up) == "1") {
    std::ofstream(path) << want;
  }
  std::ifstream in(path);
  const std::string have((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  INFO("docs/config.md is stale: run ECO_UPDATE_DOCS=1 build/tests/test_config \"[docs]\"");
  CHECK(have == want);
}

TEST_CASE("every config shipped in configs/ resolves against the schema") {
  Shards s;
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(eco_test::source_dir() / "configs")) {
    if (entry.path().extension() != ".json") continue;
    INFO(entry.path().filename().string());
    std::ifstream in(entry.path());
    json j = json::parse(in, nullptr, /*allow_exceptions=*/true, /*ignore_comments=*/true);  // as the CLI reads it
    // The corpora may not be fetched where the tests run; everything else must resolve as shipped.
    j["data"]["train"] = s.train;
    j["data"]["val"] = s.val;
    CHECK_NOTHROW(resolve(j));
    ++checked;
  }
  CHECK(checked >= 11);  // moe_tiny_cpu, moe_2b, tiny_cpu, ablation_tiny, ablation_small, gpt2_124m, gpt_30m … gpt_800m
}

// --- integers that would be narrowed or overflow in the code (hardening) ---

// Every key the code reads as an int (Config::get_int32), from `grep -rn 'get_int' src`:
// src/train/model_setup.cpp and src/train/trainer.cpp.
const std::set<std::string> kIntReadKeys = {
    "model.vocab_size", "model.padded_vocab", "model.n_layer", "model.n_head", "model.d_model",
    "model.max_seq_len", "model.mlp_hidden", "train.batch_size", "train.seq_len", "train.grad_accum",
    "train.threads", "train.eval_batches", "train.sample_tokens", "train.keep_checkpoints", "moe.experts",
    "moe.top_k", "moe.first_layer", "moe.every", "moe.expert_hidden"};

TEST_CASE("every int key has a finite upper bound; keys read as int fit in an int", "[config][bounds]") {
  const auto& schema = eco::eco_train_schema();
  for (const std::string& k : kIntReadKeys) {
    INFO(k);
    REQUIRE(schema.find(k) != nullptr);
    CHECK(schema.find(k)->type == eco::ValueType::Int);
  }
  for (const eco::SchemaEntry& e : schema.entries) {
    if (e.type != eco::ValueType::Int) continue;
    INFO(e.key);
    REQUIRE(e.range.hi.has_value());
    REQUIRE(e.range.lo.has_value());
    CHECK(std::isfinite(*e.range.hi));
    // Within the integers a double holds exactly, so the bound check itself cannot round.
    CHECK(*e.range.hi <= 0x1p53);
    if (kIntReadKeys.count(e.key)) {
      CHECK(*e.range.hi <= INT32_MAX);
      CHECK(*e.range.lo >= INT32_MIN);
    }
  }
}

TEST_CASE("values past an int key's bound are refused with the key named", "[config][bounds]") {
  Shards s;
  // 2^32 + 1 narrowed to int was 1: a run with batch 1 while config.json recorded the huge value.
  CHECK(resolve_error(s.base(), {"train.batch_size=4294967297"}) ==
        "config error: train.batch_size: expected an integer in [1, 2147483647], got 4294967297");
  CHECK(resolve_error(s.base(), {"train.grad_accum=9223372036854775807"}).find("config error: train.grad_accum: ") == 0);
  CHECK(resolve_error(s.base(), {"train.threads=1025"}) ==
        "config error: train.threads: expected an integer in [0, 1024], got 1025");
  CHECK_NOTHROW(resolve(s.base(), {"train.threads=1024"}));
  for (const eco::SchemaEntry& e : eco::eco_train_schema().entries) {
    if (e.type != eco::ValueType::Int) continue;
    INFO(e.key);
    const auto above = static_cast<int64_t>(*e.range.hi) + 1;
    for (const std::string& v : {std::to_string(above), std::string("4294967297"), std::string("9223372036854775807"),
                                 std::string("18446744073709551615"), std::string("1e300"), std::string("-1e300")}) {
      if (v == "4294967297" && *e.range.hi >= 4294967297.0) continue;
      CHECK(resolve_error(s.base(), {e.key + "=" + v}).find("config error: " + e.key + ": expected an integer") == 0);
    }
  }
}

TEST_CASE("tokens per micro-batch and per step are bounded across keys", "[config][bounds]") {
  Shards s;
  // 2^21 * 1024 = 2^31 tokens: the model counts a micro-batch's tokens in an int.
  CHECK(resolve_error(s.base(), {"train.batch_size=2097152", "train.seq_len=1024"})
            .find("config error: train.batch_size: batch_size * seq_len = 2147483648 tokens per micro-batch") == 0);
  CHECK_NOTHROW(resolve(s.base(), {"train.batch_size=2097151", "train.seq_len=1024"}));
  // 2^30 tokens per micro-batch * 1024 micro-batches = 2^40: the largest step allowed.
  CHECK_NOTHROW(resolve(s.base(), {"train.batch_size=1048576", "train.seq_len=1024", "train.grad_accum=1024"}));
  CHECK(resolve_error(s.base(), {"train.batch_size=1048576", "train.seq_len=1024", "train.grad_accum=1025"})
            .find("config error: train.grad_accum: batch_size * seq_len * grad_accum = 1100585369600 tokens per step "
                  "exceeds 2^40") == 0);
  // Products beyond 64 bits are caught, not wrapped into something small.
  CHECK(resolve_error(s.base(), {"train.batch_size=2147483647", "train.seq_len=1", "train.grad_accum=2147483647"})
            .find("config error: train.grad_accum: ") == 0);
}

TEST_CASE("get_int32 returns ints and refuses values a missing bound let through", "[config][bounds]") {
  eco::Schema schema;
  schema.sections = {{"a", "section a"}};
  schema.entries = {eco::int_key("a.n", 0, eco::Range::any(), "unbounded on purpose")};
  CHECK(Config::from_json(json::object(), {"a.n=-7"}, schema).get_int32("a.n") == -7);
  CHECK(Config::from_json(json::object(), {"a.n=2147483647"}, schema).get_int32("a.n") == INT32_MAX);
  CHECK_THROWS_AS(Config::from_json(json::object(), {"a.n=2147483648"}, schema).get_int32("a.n"), std::logic_error);
  CHECK_THROWS_AS(Config::from_json(json::object(), {"a.n=-4294967297"}, schema).get_int32("a.n"), std::logic_error);
}

TEST_CASE("--threads is checked against train.threads' bound before it is narrowed", "[config][bounds]") {
  auto parse = [](std::vector<std::string> args) {
    args.insert(args.begin(), "eco_train");
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    return eco::parse_cli(static_cast<int>(argv.size()), argv.data());
  };
  CHECK(parse({"--config", "x.json", "--threads", "8"}).threads == 8);
  CHECK(config_error_any([&] { parse({"--config", "x.json", "--threads", "4294967297"}); }) ==
        "flag --threads: expected an integer in [0, 1024], got 4294967297");
  CHECK(config_error_any([&] { parse({"--config", "x.json", "--threads", "99999999999999999999999"}); })
            .find("flag --threads: expected a non-negative integer") == 0);
  CHECK(config_error_any([&] { parse({"--config", "x.json", "--stop-after", "99999999999999999999999"}); })
            .find("flag --stop-after: expected a non-negative integer") == 0);
}

// --- JSON the library would fail on: overflow, deep nesting, FIFOs, invalid UTF-8 ---

TEST_CASE("a number beyond a double in the config file is a config error naming the file", "[config][json]") {
  const std::string f = write_file("huge_number.json", "{\"optim\": {\"lr\": 1e400}}");
  const std::string msg = config_error([&] { Config::load(f, {}, eco::eco_train_schema()); });
  CHECK(msg.find("config error: " + f + ": not valid JSON: ") == 0);
  CHECK(msg.find("1e400") != std::string::npos);
}

TEST_CASE("deeply nested JSON in a file or a --set value is refused without recursion", "[config][json]") {
  Shards s;
  const std::string deep(100000, '[');
  const std::string f = write_file("deep.json", "{\"train\": {\"steps\": " + deep + "}}");
  CHECK(config_error([&] { Config::load(f, {}, eco::eco_train_schema()); })
            .find("config error: " + f + ": not valid JSON: nested more than 64 levels deep") == 0);
  // Closed and unclosed, the value is kept as text and shown cut short.
  const std::string closed = deep + std::string(100000, ']');
  for (const std::string& v : {deep, closed}) {
    const std::string msg = resolve_error(s.base(), {"train.steps=" + v});
    CHECK(msg.find("config error: train.steps: expected an integer in [1, 1000000000000], got \"[[[[") == 0);
    CHECK(msg.size() < 200);
  }
  // Deep but within the limit: a wrong type, shown cut short.
  CHECK(resolve_error(s.base(), {"train.steps=" + std::string(40, '[') + std::string(40, ']')})
            .find("config error: train.steps: expected an integer") == 0);
  // A number beyond a double in --set is text too, refused by type.
  CHECK(resolve_error(s.base(), {"optim.lr=1e400"}) == "config error: optim.lr: expected a number > 0, got \"1e400\"");
}

TEST_CASE("a FIFO given as the config file is refused at once", "[config][json]") {
  const auto dir = eco_test::scratch_dir("config_fifo");
  const std::string fifo = (dir / "cfg.json").string();
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  ::alarm(20);  // the old reader blocked forever waiting for a writer: let SIGALRM fail the test instead
  const std::string msg = config_error([&] { Config::load(fifo, {}, eco::eco_train_schema()); });
  ::alarm(0);
  CHECK(msg == "config error: cannot read config file \"" + fifo + "\": not a regular file");
}

TEST_CASE("invalid UTF-8 in --set values and odd keys give one-line config errors", "[config][json]") {
  Shards s;
  // An enum and an int key shown with invalid UTF-8 (the message used to throw while printing it).
  CHECK(resolve_error(s.base(), {"model.arch=\xff\xfe"}).find("config error: model.arch: expected one of") == 0);
  CHECK(resolve_error(s.base(), {"train.steps=\xc3"}).find("config error: train.steps: expected an integer") == 0);
  // A path key would pass and then break writing config.json: refused up front.
  CHECK(resolve_error(s.base(), {"log.dir=runs/\xff"}).find("config error: log.dir: expected valid UTF-8 text") == 0);
  // Keys with control characters or megabytes long stay one short line.
  json j = s.base();
  j["train"]["st\neps"] = 1;
  CHECK(resolve_error(j) == "config error: unknown key \"train.st\\x0aeps\" (did you mean \"train.steps\"?)");
  j = s.base();
  j["train"][std::string(4 << 20, 'k')] = 1;
  CHECK(resolve_error(j).size() < 300);
  CHECK(resolve_error(s.base(), {"train.ste\nps=3"}).find("config error: --set train.ste\\x0aps=3: unknown key") == 0);
}
