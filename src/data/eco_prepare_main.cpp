// eco_prepare: text files -> llm.c token shards.
//
// Every input file is one document. Each document becomes [separator] + encode(text), llm.c's
// convention (the GPT-2 separator is <|endoftext|> = 50256; the byte tokenizer's is byte 0), and the
// documents are concatenated in input order (directory trees in byte-wise path order).
//
// Walking directories: symlinks to directories are followed, but every directory is entered once
// and every file is read once, identified by (device, inode), so a symlink cycle, a link back into
// the tree, a hard link or an INPUT named twice cannot repeat a document. The real tree is walked
// first and linked directories after it, so a file keeps the path it has in the real tree. Under a
// directory, entries named *.txt that are not regular files (FIFOs, devices, dangling links) are
// skipped with a warning, since reading a FIFO would block; such a file named as an INPUT is an
// error. Nothing is ever opened in a way that can block.
//
// The output directory is checked (created, writable) before any input is read, so a bad --out
// fails at once with exit 6 rather than after hours of tokenizing.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/json_read.h"
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

Symlinks to directories are followed, but each directory is entered once and each file is read
once (a file reached again through a symlink, a hard link or a second INPUT is skipped), so
symlink cycles are harmless. Entries named *.txt that are not regular files (FIFOs, devices,
dangling symlinks) are skipped with a warning; naming one as an INPUT is an error.

options:
  --tokenizer NAME     gpt2 (GPT-2 BPE, vocab 50257) or byte (vocab 256)
  --tokenizer-dir DIR  directory with GPT-2's encoder.json and vocab.bpe (default data/tokenizer;
                       tools/fetch_data.sh installs them)
  --out PREFIX         write PREFIX.bin, e.g. --out data/tiny/train
  --shard-tokens N     instead write shards of at most N tokens: PREFIX_000000.bin, PREFIX_000001.bin, ...
  -h, --help           this text

exit codes: 0 ok, 2 bad flag, 3 bad, missing or unreadable input, 6 system error (output directory,
disk, memory)
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

// What a path leads to, after following symlinks. The identity makes a file or directory reached by
// two paths (symlinks, hard links, bind mounts) recognisable.
struct FileId {
  dev_t dev = 0;
  ino_t ino = 0;
  auto operator<=>(const FileId&) const = default;
};
enum class Kind { missing, regular, directory, other };
struct Target {
  Kind kind = Kind::missing;
  FileId id;
  int err = 0;  // errno when kind is missing
};

Target stat_target(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return {Kind::missing, {}, errno};
  const Kind kind = S_ISREG(st.st_mode) ? Kind::regular : S_ISDIR(st.st_mode) ? Kind::directory : Kind::other;
  return {kind, {st.st_dev, st.st_ino}, 0};
}

bool is_link(const fs::path& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
}

// Lists the documents of the inputs, in order, each file once (see the file comment).
class DocumentLister {
 public:
  void add_input(const std::string& in) {
    const Target t = stat_target(in);
    if (t.kind == Kind::missing) {
      if (t.err == ENOENT && is_link(in)) throw eco::DataError("input " + in + " is a symlink to a missing file");
      if (t.err == ENOENT || t.err == ENOTDIR) throw eco::DataError("input " + in + " does not exist");
      throw eco::DataError("cannot access input " + in + ": " + std::strerror(t.err));
    }
    if (t.kind == Kind::other)
      throw eco::DataError("input " + in + " is not a regular file (a FIFO, device or socket); name text files or "
                           "directories of *.txt files");
    if (t.kind == Kind::regular) {
      take_file(in, t.id);
    } else if (!dirs_entered_.insert(t.id).second) {
      ++repeats_;
    } else {
      add_tree(in);
    }
  }

  const std::vector<fs::path>& documents() const { return docs_; }
  // Paths skipped because they lead to a file or directory already taken.
  size_t repeats() const { return repeats_; }

 private:
  struct Found {
    fs::path path;
    FileId id;
  };

  void take_file(const fs::path& p, FileId id) {
    if (files_taken_.insert(id).second) docs_.push_back(p);
    else ++repeats_;
  }

  // Breadth-first over real directories; directories reached through symlinks wait until the real
  // tree is done, so a directory is never entered under a link's name when it has a real one.
  void add_tree(const fs::path& root) {
    std::vector<Found> found;
    std::deque<fs::path> queue{root};
    std::vector<fs::path> linked;
    while (!queue.empty()) {
      while (!queue.empty()) {
        const fs::path dir = std::move(queue.front());
        queue.pop_front();
        list_directory(dir, queue, linked, found);
      }
      std::sort(linked.begin(), linked.end(), by_bytes);
      for (const fs::path& link : linked) {
        const Target t = stat_target(link);
        if (t.kind == Kind::directory && dirs_entered_.insert(t.id).second) queue.push_back(link);
        else ++repeats_;
      }
      linked.clear();
    }
    if (found.empty()) throw eco::DataError("input directory " + root.string() + " holds no *.txt files");
    std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) { return by_bytes(a.path, b.path); });
    for (const Found& f : found) take_file(f.path, f.id);
  }

  void list_directory(const fs::path& dir, std::deque<fs::path>& queue, std::vector<fs::path>& linked,
                      std::vector<Found>& found) {
    std::error_code ec;
    // increment(ec), not a range-for: the iterator's operator++ throws on an I/O error.
    fs::directory_iterator it(dir, ec);
    for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
      const fs::path& p = it->path();
      const Target t = stat_target(p);
      if (t.kind == Kind::directory) {
        if (is_link(p)) linked.push_back(p);
        else if (dirs_entered_.insert(t.id).second) queue.push_back(p);
        else ++repeats_;  // a bind mount of a directory already entered
      } else if (p.extension() == ".txt") {
        if (t.kind == Kind::regular) found.push_back({p, t.id});
        else warn_skipped(p, t);
      }
    }
    if (ec)
      throw eco::DataError("cannot list directory " + dir.string() + ": " + ec.message() +
                           " (fix its permissions or leave it out of the input)");
  }

  static void warn_skipped(const fs::path& p, const Target& t) {
    const std::string why = t.kind == Kind::missing ? (t.err == ENOENT ? std::string("a dangling symlink")
                                                                       : std::string(std::strerror(t.err)))
                                                    : "not a regular file";
    std::fprintf(stderr, "eco_prepare: warning: skipping %s: %s\n", p.c_str(), why.c_str());
  }

  static bool by_bytes(const fs::path& a, const fs::path& b) { return a.native() < b.native(); }

  std::set<FileId> dirs_entered_, files_taken_;
  std::vector<fs::path> docs_;
  size_t repeats_ = 0;
};

std::vector<fs::path> list_documents(const std::vector<std::string>& inputs) {
  DocumentLister lister;
  for (const std::string& in : inputs) lister.add_input(in);
  if (lister.repeats() > 0)
    std::fprintf(stderr,
                 "eco_prepare: note: %zu paths led to files or directories already read (symlinks, hard links or "
                 "a repeated INPUT); each was read once\n",
                 lister.repeats());
  return lister.documents();
}

std::string read_document(const fs::path& p) {
  // Documents are read whole (the tokenizer needs all of a document); read_small_file refuses a
  // FIFO or device that appeared since listing without blocking on it.
  std::string text, error;
  if (!eco::read_small_file(p, text, error, std::numeric_limits<size_t>::max()))
    throw eco::DataError("cannot read input " + p.string() + ": " + error);
  return text;
}

// Fails before any tokenizing when the shards could not be written: the prefix has no file name,
// or its directory cannot be created or written.
void check_output_prefix(const std::string& prefix) {
  const fs::path p(prefix);
  if (!p.has_filename() || p.filename() == "." || p.filename() == "..")
    throw eco::ConfigError("--out " + prefix + ": PREFIX must end in a file name, e.g. --out data/tiny/train");
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  const Target t = stat_target(dir);
  if (t.kind == Kind::regular || t.kind == Kind::other)
    throw eco::SystemError("cannot write shards to " + dir.string() + ": it is a file, not a directory; choose "
                           "another --out");
  std::error_code ec;
  if (t.kind == Kind::missing) fs::create_directories(dir, ec);
  if (ec)
    throw eco::SystemError("cannot create the output directory " + dir.string() + ": " + ec.message() +
                           "; choose another --out");
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    throw eco::SystemError("cannot write to the output directory " + dir.string() + ": " + std::strerror(errno) +
                           "; choose another --out");
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
  check_output_prefix(args.out);
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
  } catch (const fs::filesystem_error& e) {
    // Every expected failure is reported above with its own message; this keeps any other file
    // system failure a system error naming its path rather than an "internal error".
    std::fprintf(stderr, "eco_prepare: %s\n", e.what());
    return 6;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "eco_prepare: internal error: %s\n", e.what());
    return 1;
  }
}
