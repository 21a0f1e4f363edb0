// eco_prepare: text files -> llm.c token shards.
//
// Every input file is one document. Each document becomes [separator] + encode(text), llm.c's
// convention (the GPT-2 separator is <|endoftext|> = 50256; the byte tokenizer's is byte 0), and the
// documents are concatenated in input order (directory trees in byte-wise path order).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "data/shard.h"
#include "data/tokenizer.h"

namespace fs = std::filesystem;

namespace {

constexpr const char* kUsage = R"(usage: eco_prepare --tokenizer gpt2|byte [--tokenizer-dir DIR] --out PREFIX
                   [--shard-tokens N] INPUT...

Tokenizes text into llm.c token shards (uint16, magic 20240520) for eco_train.

Each INPUT is a text file or a directory; a directory contributes every *.txt below it, in
byte-wise path order. Every file is one document; each document is written as the document
separator followed by its tokens (GPT-2: <|endoftext|> = 50256; byte: 0). GPT-2 input must be
valid UTF-8.

options:
  --tokenizer NAME     gpt2 (GPT-2 BPE, vocab 50257) or byte (vocab 256)
  --tokenizer-dir DIR  directory with GPT-2's encoder.json and vocab.bpe (default data/tokenizer;
                       tools/fetch_data.sh installs them)
  --out PREFIX         write PREFIX.bin, e.g. --out data/tiny/train
  --shard-tokens N     instead write shards of at most N tokens: PREFIX_000000.bin, PREFIX_000001.bin, ...
  -h, --help           this text

exit codes: 0 ok, 2 bad flag, 3 bad or missing input, 6 system error (disk)
)";

struct Args {
  std::string tokenizer;
  std::string tokenizer_dir = "data/tokenizer";
  std::string out;
  uint64_t shard_tokens = 0;  // 0 = one shard
  std::vector<std::string> inputs;
  bool help = false;
};

Args parse_args(int argc, char** argv) {
  Args a;
  auto value_of = [&](int& i) -> std::string {
    if (i + 1 >= argc) throw eco::ConfigError(std::string("flag ") + argv[i] + " needs a value (see --help)");
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    const std::string_view f = argv[i];
    if (f == "-h" || f == "--help") a.help = true;
    else if (f == "--tokenizer") a.tokenizer = value_of(i);
    else if (f == "--tokenizer-dir") a.tokenizer_dir = value_of(i);
    else if (f == "--out") a.out = value_of(i);
    else if (f == "--shard-tokens") {
      const std::string v = value_of(i);
      char* end = nullptr;
      const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || v[0] == '-' || n == 0 || n > eco::kShardMaxTokens)
        throw eco::ConfigError("--shard-tokens: expected an integer in [1, " + std::to_string(eco::kShardMaxTokens) +
                               "], got \"" + v + "\"");
      a.shard_tokens = n;
    } else if (f.size() > 1 && f[0] == '-') {
      throw eco::ConfigError("unknown flag " + std::string(f) + " (see --help)");
    } else {
      a.inputs.emplace_back(f);
    }
  }
  if (a.help) return a;
  if (a.tokenizer.empty()) throw eco::ConfigError("--tokenizer is required: gpt2 or byte");
  if (a.tokenizer != "gpt2" && a.tokenizer != "byte")
    throw eco::ConfigError("--tokenizer: unknown tokenizer \"" + a.tokenizer + "\"; use gpt2 or byte");
  if (a.out.empty()) throw eco::ConfigError("--out PREFIX is required (e.g. --out data/tiny/train)");
  if (a.inputs.empty()) throw eco::ConfigError("no INPUT given: name text files or directories (see --help)");
  return a;
}

// The documents named by the inputs, in order.
std::vector<fs::path> list_documents(const std::vector<std::string>& inputs) {
  std::vector<fs::path> docs;
  for (const std::string& in : inputs) {
    std::error_code ec;
    if (fs::is_directory(in, ec)) {
      std::vector<fs::path> found;
      for (auto it = fs::recursive_directory_iterator(in, fs::directory_options::follow_directory_symlink, ec);
           !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (it->path().extension() == ".txt" && it->is_regular_file(ec)) found.push_back(it->path());
      }
      if (ec) throw eco::DataError("cannot list directory " + in + ": " + ec.message());
      if (found.empty()) throw eco::DataError("input directory " + in + " holds no *.txt files");
      std::sort(found.begin(), found.end(), [](const fs::path& a, const fs::path& b) { return a.native() < b.native(); });
      docs.insert(docs.end(), found.begin(), found.end());
    } else if (fs::is_regular_file(in, ec)) {
      docs.emplace_back(in);
    } else {
      throw eco::DataError("input " + in + " does not exist (or is not a file or directory)");
    }
  }
  return docs;
}

std::string read_document(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw eco::DataError("cannot read input " + p.string());
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Collects tokens and writes them as one shard, or as numbered shards of a fixed size.
class ShardWriter {
 public:
  ShardWriter(std::string prefix, uint64_t shard_tokens) : prefix_(std::move(prefix)), shard_tokens_(shard_tokens) {}

  void add(const std::vector<uint32_t>& ids, uint32_t separator) {
    push(separator);
    for (uint32_t id : ids) push(id);
  }
  void finish() {
    if (!buf_.empty() || written_.empty()) flush();
  }
  const std::vector<std::string>& written() const { return written_; }
  uint64_t total() const { return total_; }

 private:
  void push(uint32_t id) {
    // The llm.c format stores uint16 ids; both tokenizers here fit.
    buf_.push_back(static_cast<uint16_t>(id));
    ++total_;
    if (shard_tokens_ != 0 && buf_.size() == shard_tokens_) flush();
    else if (shard_tokens_ == 0 && buf_.size() > eco::kShardMaxTokens)
      throw eco::DataError("more than " + std::to_string(eco::kShardMaxTokens) +
                           " tokens do not fit one shard; add --shard-tokens 100000000");
  }
  void flush() {
    char num[16];
    std::snprintf(num, sizeof(num), "_%06zu", written_.size());
    const std::string path = prefix_ + (shard_tokens_ ? num : "") + ".bin";
    eco::write_shard(path, buf_);
    written_.push_back(path);
    buf_.clear();
  }

  std::string prefix_;
  uint64_t shard_tokens_;
  std::vector<uint16_t> buf_;
  std::vector<std::string> written_;
  uint64_t total_ = 0;
};

int run(const Args& args) {
  std::unique_ptr<eco::Tokenizer> tok = eco::make_tokenizer(args.tokenizer, args.tokenizer_dir);
  const auto t0 = std::chrono::steady_clock::now();  // tokenizing and writing, not loading the vocabulary
  const std::vector<fs::path> docs = list_documents(args.inputs);
  ShardWriter writer(args.out, args.shard_tokens);
  uint64_t bytes = 0;
  for (const fs::path& doc : docs) {
    const std::string text = read_document(doc);
    bytes += text.size();
    try {
      writer.add(tok->encode(text), tok->eot());
    } catch (const eco::DataError& e) {
      throw eco::DataError(doc.string() + ": " + e.what());
    }
  }
  if (writer.total() == 0) throw eco::DataError("no tokens to write");
  writer.finish();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("eco_prepare: %zu documents, %llu bytes -> %llu %s tokens (%.2f bytes/token) in %.2f s, %.0f tokens/s\n",
              docs.size(), static_cast<unsigned long long>(bytes), static_cast<unsigned long long>(writer.total()),
              tok->name().c_str(), writer.total() ? static_cast<double>(bytes) / writer.total() : 0.0, secs,
              writer.total() / (secs > 0 ? secs : 1e-9));
  for (const std::string& p : writer.written()) std::printf("  wrote %s\n", p.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse_args(argc, argv);
    if (args.help) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    return run(args);
  } catch (const eco::Error& e) {
    std::fprintf(stderr, "eco_prepare: %s\n", e.what());
    return e.exit_code();
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "eco_prepare: out of memory (use --shard-tokens to write smaller shards)\n");
    return 6;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "eco_prepare: internal error: %s\n", e.what());
    return 1;
  }
}
