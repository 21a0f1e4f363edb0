// GEMMs on cuBLASLt: the fp32 linear layer (forward, backward) and the quantized forward GEMM.
//
// Row-major to cuBLAS: a row-major [r,c] buffer is a column-major c×r matrix with ld = c, so the
// row-major product out[N,OC] = X[N,K]·W[OC,K]ᵀ is the column-major outᵀ (OC×N) = W·Xᵀ with
// cuBLAS A = W's bytes (op T), B = X's bytes (op N), m = OC, n = N, k = K. That is the "TN" layout
// FP8 needs on Hopper (both operands contiguous along K; research/cuda-fp8.md §1.1, §1.11).
//
// Numerics:
//   fp32 GEMMs use CUBLAS_COMPUTE_32F with fp32 data (never TF32), so they differ from the CPU's
//   sgemm only in summation order.
//   The quantized GEMM never rounds an operand: with per-row (or per-tensor) scales
//   dequant(a)·dequant(w)ᵀ = diag(sa)·(codes_a·codes_wᵀ)·diag(sw), so it multiplies the codes and
//   applies the scales to the fp32 result. On sm_90 with E4M3 (or E4M3×E5M2) codes that is one
//   FP8 cuBLASLt GEMM with OUTER_VEC_32F scales (FAST_ACCUM off: partial sums are promoted to fp32,
//   DESIGN.md §3 "fp32 accumulation"); otherwise the codes are widened to BF16 (exact: FP8 and
//   INT8 values have at most 8 significant bits) in transient memory, multiplied with fp32
//   accumulation, and scaled by a small kernel. 128×128-block scales cannot be factored out of
//   the sum: those operands are dequantized to fp32 (transiently) and go through the fp32 GEMM.
//   Biases are added by a kernel in fp32 (the FP8 BIAS epilogue would round them to BF16).
//
// Plans (descriptors, layouts, the heuristic's algorithm) are cached per device and shape; an FP8
// shape that cuBLASLt rejects is remembered and logged once, then always takes the BF16 path.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "cuda/cuda_check.h"
#include "cuda/cuda_ops.h"
#include "quant/quant_format.h"

#include "core/log.h"

namespace eco::cuda {

namespace {

void log_warning(const std::string& msg) { spdlog::warn("{}", msg); }

const char* type_name(cudaDataType_t t) {
  switch (t) {
    case CUDA_R_32F: return "f32";
    case CUDA_R_16BF: return "bf16";
    case CUDA_R_8F_E4M3: return "e4m3";
    case CUDA_R_8F_E5M2: return "e5m2";
    default: return "?";
  }
}

// The largest power of two <= 256 dividing the address: what cuBLASLt may assume about it
// (PREF_MIN_ALIGNMENT_*; the default of 256 is wrong for sub-views of a buffer).
uint32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && (a % al) != 0) al >>= 1;
  return al;
}

// One GEMM in cuBLAS's column-major terms: D (m×n, ld ldd) = op(A)·op(B) [+ beta·D].
struct GemmShape {
  cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
  int64_t m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldd = 0;
  cudaDataType_t a_type = CUDA_R_32F, b_type = CUDA_R_32F, d_type = CUDA_R_32F;
  bool outer_vec = false;  // FP8 with per-row (A: m-vector, B: n-vector) fp32 dequantization scales
  uint32_t align_a = 256, align_b = 256, align_d = 256;

  // D = op(A)·op(B) over these buffers, their alignment classes recorded.
  static GemmShape of(cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k, int64_t lda,
                      int64_t ldb, int64_t ldd, const void* a, const void* b, const void* d,
                      cudaDataType_t a_type = CUDA_R_32F, cudaDataType_t b_type = CUDA_R_32F) {
    GemmShape s;
    s.ta = ta;
    s.tb = tb;
    s.m = m;
    s.n = n;
    s.k = k;
    s.lda = lda;
    s.ldb = ldb;
    s.ldd = ldd;
    s.a_type = a_type;
    s.b_type = b_type;
    s.align_a = alignment_of(a);
    s.align_b = alignment_of(b);
    s.align_d = alignment_of(d);
    return s;
  }

  std::string describe() const {
    char buf[256];
    std::snprintf(buf, sizeof buf, "M=%lld N=%lld K=%lld op %c%c, A %s B %s D %s%s, align %u/%u/%u",
                  static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(k),
                  ta == CUBLAS_OP_T ? 'T' : 'N', tb == CUBLAS_OP_T ? 'T' : 'N', type_name(a_type),
                  type_name(b_type), type_name(d_type), outer_vec ? ", OUTER_VEC_32F scales" : "", align_a, align_b,
                  align_d);
    return buf;
  }
};

using PlanKey = std::tuple<int, int, int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int, bool,
                           uint32_t, uint32_t, uint32_t, size_t>;

PlanKey key_of(int device, const GemmShape& s, size_t workspace) {
  return {device,    static_cast<int>(s.ta), static_cast<int>(s.tb), s.m,     s.n,     s.k,     s.lda,   s.ldb,
          s.ldd,     static_cast<int>(s.a_type), static_cast<int>(s.b_type), static_cast<int>(s.d_type),
          s.outer_vec, s.align_a, s.align_b, s.align_d, workspace};
}

// Descriptors and the chosen algorithm of one shape. `supported` is false for an FP8 shape the
// library turned down (heuristic or matmul status); `why` says how.
struct LtPlan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;  // C shares D's layout (in place)
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;
  bool supported = true;
  std::string why;

  LtPlan() = default;
  LtPlan(const LtPlan&) = delete;
  LtPlan& operator=(const LtPlan&) = delete;
  ~LtPlan() {
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// Plans are host objects shared by every CudaOps on a device; the mutex also covers setting a
// plan's per-call attributes (scale pointers) and enqueueing the matmul that reads them.
std::mutex g_plan_mutex;
std::map<PlanKey, std::unique_ptr<LtPlan>>& plan_cache() {
  static auto* cache = new std::map<PlanKey, std::unique_ptr<LtPlan>>();  // never destroyed: no exit-order issues
  return *cache;
}

[[noreturn]] void throw_lt(cublasStatus_t st, const char* what, const GemmShape& s) {
  throw Error(std::string("cuBLASLt ") + what + " failed for GEMM " + s.describe() + ": " +
              cublasLtGetStatusName(st) + " (" + std::to_string(static_cast<int>(st)) + ", " +
              cublasLtGetStatusString(st) + ")");
}

#define ECO_LT(call, what, shape)                           \
  do {                                                      \
    const cublasStatus_t eco_lt_st_ = (call);               \
    if (eco_lt_st_ != CUBLAS_STATUS_SUCCESS) throw_lt(eco_lt_st_, what, shape); \
  } while (0)

bool is_rejection(cublasStatus_t st) { return st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_INVALID_VALUE; }

template <class T>
void set_desc(cublasLtMatmulDesc_t op, cublasLtMatmulDescAttributes_t attr, const T& value, const char* name,
              const GemmShape& s) {
  ECO_LT(cublasLtMatmulDescSetAttribute(op, attr, &value, sizeof(value)), name, s);
}

// Builds the plan of shape s. Descriptor errors always throw; a heuristic that finds no kernel
// throws unless `soft` (the FP8 path), where it marks the plan unsupported.
std::unique_ptr<LtPlan> make_plan(cublasLtHandle_t lt, const GemmShape& s, size_t workspace_bytes, bool soft,
                                  const float* a_scale, const float* b_scale) {
  auto p = std::make_unique<LtPlan>();
  ECO_LT(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "MatmulDescCreate", s);
  const int32_t ta = s.ta, tb = s.tb;
  set_desc(p->op, CUBLASLT_MATMUL_DESC_TRANSA, ta, "set TRANSA", s);
  set_desc(p->op, CUBLASLT_MATMUL_DESC_TRANSB, tb, "set TRANSB", s);
  if (s.outer_vec) {
    const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
    set_desc(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, mode, "set A_SCALE_MODE", s);
    set_desc(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, mode, "set B_SCALE_MODE", s);
    // Promote the tensor cores' partial sums to fp32 periodically (Hopper's FP8 accumulator keeps
    // only ~14 bits; research/cuda-fp8.md §1.4).
    const int8_t fast_accum = 0;
    set_desc(p->op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, fast_accum, "set FAST_ACCUM", s);
    // Set before the heuristic query, as TransformerEngine and PyTorch do; reset on every call.
    const void* as = a_scale;
    const void* bs = b_scale;
    set_desc(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, as, "set A_SCALE_POINTER", s);
    set_desc(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, bs, "set B_SCALE_POINTER", s);
  }
  const auto rows_a = static_cast<uint64_t>(s.ta == CUBLAS_OP_N ? s.m : s.k);
  const auto cols_a = static_cast<uint64_t>(s.ta == CUBLAS_OP_N ? s.k : s.m);
  const auto rows_b = static_cast<uint64_t>(s.tb == CUBLAS_OP_N ? s.k : s.n);
  const auto cols_b = static_cast<uint64_t>(s.tb == CUBLAS_OP_N ? s.n : s.k);
  ECO_LT(cublasLtMatrixLayoutCreate(&p->a, s.a_type, rows_a, cols_a, s.lda), "MatrixLayoutCreate(A)", s);
  ECO_LT(cublasLtMatrixLayoutCreate(&p->b, s.b_type, rows_b, cols_b, s.ldb), "MatrixLayoutCreate(B)", s);
  ECO_LT(cublasLtMatrixLayoutCreate(&p->d, s.d_type, static_cast<uint64_t>(s.m), static_cast<uint64_t>(s.n), s.ldd),
         "MatrixLayoutCreate(D)", s);

  cublasLtMatmulPreference_t pref = nullptr;
  ECO_LT(cublasLtMatmulPreferenceCreate(&pref), "MatmulPreferenceCreate", s);
  struct PrefGuard {
    cublasLtMatmulPreference_t p;
    ~PrefGuard() { cublasLtMatmulPreferenceDestroy(p); }
  } guard{pref};
  const uint64_t ws = workspace_bytes;
  ECO_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws),
         "set PREF_MAX_WORKSPACE_BYTES", s);
  const uint32_t al[4] = {s.align_a, s.align_b, s.align_d, s.align_d};
  const cublasLtMatmulPreferenceAttributes_t al_attr[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int i = 0; i < 4; ++i)
    ECO_LT(cublasLtMatmulPreferenceSetAttribute(pref, al_attr[i], &al[i], sizeof al[i]), "set PREF_MIN_ALIGNMENT", s);

  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(lt, p->op, p->a, p->b, p->d, p->d, pref, 1, &result, &returned);
  if (st == CUBLAS_STATUS_SUCCESS && returned > 0 && result.state == CUBLAS_STATUS_SUCCESS) {
    p->algo = result.algo;
    p->workspace = result.workspaceSize;
    return p;
  }
  // No kernel: SUCCESS with zero results means the same as NOT_SUPPORTED (research/cuda-fp8.md §1.10).
  const cublasStatus_t why = st != CUBLAS_STATUS_SUCCESS ? st
                             : returned > 0          ? result.state
                                                     : CUBLAS_STATUS_NOT_SUPPORTED;
  if (!soft || !is_rejection(why)) throw_lt(why, "AlgoGetHeuristic (no kernel)", s);
  p->supported = false;
  p->why = std::string("heuristic: ") + cublasLtGetStatusName(why) +
           (st == CUBLAS_STATUS_SUCCESS && returned == 0 ? " (0 algorithms)" : "");
  return p;
}

// Runs D = op(A)·op(B) + beta·D. Returns false only when `soft` and cuBLASLt rejected the shape
// (now or earlier; the first rejection is logged); every other failure throws with the shape.
bool lt_matmul(cublasLtHandle_t lt, int device, cudaStream_t stream, void* workspace, size_t workspace_bytes,
               const GemmShape& s, const void* A, const void* B, void* D, float beta, const float* a_scale,
               const float* b_scale, bool soft, const char* context) {
  std::lock_guard<std::mutex> lock(g_plan_mutex);
  const PlanKey key = key_of(device, s, workspace_bytes);
  auto it = plan_cache().find(key);
  if (it == plan_cache().end()) {
    // Inserted only once built: a plan that threw is retried (and throws again) next time.
    it = plan_cache().emplace(key, make_plan(lt, s, workspace_bytes, soft, a_scale, b_scale)).first;
    if (!it->second->supported)
      log_warning(std::string(context) + ": cuBLASLt rejected the FP8 GEMM " + s.describe() + " (" + it->second->why +
                  "); this shape uses the BF16 path from now on");
  }
  LtPlan& p = *it->second;
  if (!p.supported) return false;
  if (s.outer_vec) {
    const void* as = a_scale;
    const void* bs = b_scale;
    set_desc(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, as, "set A_SCALE_POINTER", s);
    set_desc(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, bs, "set B_SCALE_POINTER", s);
  }
  const float alpha = 1.0f;
  const cublasStatus_t st = cublasLtMatmul(lt, p.op, &alpha, A, p.a, B, p.b, &beta, D, p.d, D, p.d, &p.algo,
                                           workspace, workspace_bytes, stream);
  if (st == CUBLAS_STATUS_SUCCESS) return true;
  if (!soft || !is_rejection(st)) throw_lt(st, "Matmul", s);
  p.supported = false;
  p.why = std::string("matmul: ") + cublasLtGetStatusName(st);
  log_warning(std::string(context) + ": cuBLASLt rejected the FP8 GEMM " + s.describe() + " (" + p.why +
              "); this shape uses the BF16 path from now on");
  return false;
}

// ---- kernels ----

constexpr int kThreads = 256;

int grid_for(size_t n, int threads = kThreads) {
  const size_t blocks = (n + threads - 1) / threads;
  return static_cast<int>(std::min<size_t>(std::max<size_t>(blocks, 1), 65535u * 16u));
}

// out[n,o] = out[n,o]·row_scale[n·rs]·col_scale[o·cs] + bias[o]; any of the three may be absent
// (stride 0: one per-tensor scale). The column index runs along x, rows along y (strided).
__global__ void gemm_epilogue_kernel(float* out, const float* row_scale, int row_stride, const float* col_scale,
                                     int col_stride, const float* bias, int N, int OC) {
  const int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= OC) return;
  const float cs = col_scale ? col_scale[static_cast<size_t>(o) * col_stride] : 1.0f;
  const float b = bias ? bias[o] : 0.0f;
  for (int n = blockIdx.y; n < N; n += gridDim.y) {
    float* p = out + static_cast<size_t>(n) * OC + o;
    float v = *p;
    if (row_scale) v = v * row_scale[static_cast<size_t>(n) * row_stride];
    if (col_scale) v = v * cs;
    if (bias) v = v + b;
    *p = v;
  }
}

// Codes → BF16 bits. Exact: FP8 and INT8 values have at most 8 significant bits and BF16's
// exponent range covers theirs.
template <QuantFormat F>
__global__ void codes_to_bf16_kernel(uint16_t* out, const uint8_t* codes, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    out[i] = bf16_encode_rne(Codec<F>::decode(codes[i]));
}

// dbias[o] += Σ_n dout[n,o]: 32 columns per block, 32 row slices per column summed in a fixed
// order (slice y takes rows y, y+32, ...; then slices 0..31 in order): deterministic, no atomics.
constexpr int kBiasCols = 32, kBiasSlices = 32;
__global__ void bias_grad_kernel(float* dbias, const float* dout, int N, int OC) {
  __shared__ float part[kBiasSlices][kBiasCols + 1];
  const int o = blockIdx.x * kBiasCols + threadIdx.x;
  float acc = 0.0f;
  if (o < OC)
    for (int n = threadIdx.y; n < N; n += kBiasSlices) acc += dout[static_cast<size_t>(n) * OC + o];
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && o < OC) {
    float s = 0.0f;
    for (int y = 0; y < kBiasSlices; ++y) s += part[y][threadIdx.x];
    dbias[o] += s;
  }
}

void launch_epilogue(cudaStream_t stream, float* out, const float* row_scale, int row_stride, const float* col_scale,
                     int col_stride, const float* bias, int N, int OC) {
  if (!row_scale && !col_scale && !bias) return;
  const dim3 grid((OC + kThreads - 1) / kThreads, static_cast<unsigned>(std::min(N, 65535)));
  gemm_epilogue_kernel<<<grid, kThreads, 0, stream>>>(out, row_scale, row_stride, col_scale, col_stride, bias, N, OC);
  ECO_CUDA_CHECK_LAUNCH("gemm_epilogue_kernel");
}

// Transient device memory on the stream (stream-ordered allocator): freed when the op's work is
// queued, so no second resident copy of a weight ever exists.
class Scratch {
 public:
  Scratch(size_t bytes, cudaStream_t stream) : stream_(stream) {
    if (bytes) ECO_CUDA_CHECK(cudaMallocAsync(&p_, bytes, stream_));
  }
  ~Scratch() {
    if (p_) cudaFreeAsync(p_, stream_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <class T>
  T* at(size_t byte_offset) const {
    return reinterpret_cast<T*>(static_cast<char*>(p_) + byte_offset);
  }

 private:
  void* p_ = nullptr;
  cudaStream_t stream_;
};

size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

// The BF16 view of an operand: its codes as they are (BF16 format), or widened into dst.
const void* as_bf16(const QuantRef& q, uint16_t* dst, cudaStream_t stream) {
  if (q.format == QuantFormat::BF16) return q.codes;
  const size_t n = q.numel();
  const auto* codes = static_cast<const uint8_t*>(q.codes);
  switch (q.format) {
    case QuantFormat::E4M3:
      codes_to_bf16_kernel<QuantFormat::E4M3><<<grid_for(n), kThreads, 0, stream>>>(dst, codes, n);
      break;
    case QuantFormat::E5M2:
      codes_to_bf16_kernel<QuantFormat::E5M2><<<grid_for(n), kThreads, 0, stream>>>(dst, codes, n);
      break;
    case QuantFormat::INT8:
      codes_to_bf16_kernel<QuantFormat::INT8><<<grid_for(n), kThreads, 0, stream>>>(dst, codes, n);
      break;
    case QuantFormat::BF16:
    case QuantFormat::INT4:  // packed low-bit: never factorable, dequantized to fp32 instead
    case QuantFormat::INT2:
    case QuantFormat::TERNARY: break;
  }
  ECO_CUDA_CHECK_LAUNCH("codes_to_bf16_kernel");
  return dst;
}

cudaDataType_t fp8_type(QuantFormat f) { return f == QuantFormat::E4M3 ? CUDA_R_8F_E4M3 : CUDA_R_8F_E5M2; }
bool is_fp8(QuantFormat f) { return f == QuantFormat::E4M3 || f == QuantFormat::E5M2; }
// Packed low-bit operands (INT4 groups along K, INT2 / ternary codes) have no tensor-core path
// here: they take the dequantize-then-fp32-GEMM route (docs/lowbit.md "On the GPU").
bool factorable(const QuantRef& q) {
  if (q.lowbit()) return false;
  return !format_is_scaled(q.format) || q.granularity == ScaleGranularity::PerRow ||
         q.granularity == ScaleGranularity::PerTensor;
}
// Scale pointer and stride of an operand whose scales factor out of the sum (nullptr: none).
const float* scale_vector(const QuantRef& q, int* stride) {
  if (!format_is_scaled(q.format)) {
    *stride = 0;
    return nullptr;
  }
  *stride = q.granularity == ScaleGranularity::PerRow ? 1 : 0;
  return q.scales;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Whether the FP8 OUTER_VEC GEMM may be tried at all: formats, granularity, the TN alignment rules
// (research/cuda-fp8.md §1.1: K % 16 for both operands, fp32 D needs m = OC % 4, 16-byte pointers)
// and the architecture (OUTER_VEC_32F is sm_90 only). Empty when it may; else the reason.
std::string fp8_blocker(int cc_major, int cc_minor, const float* out, const QuantRef& a, const QuantRef& w, int K,
                        int OC) {
  if (!is_fp8(a.format) || !is_fp8(w.format)) return "operands are not FP8";
  if (a.format == QuantFormat::E5M2 && w.format == QuantFormat::E5M2) return "E5M2 x E5M2 has no cuBLASLt kernel";
  if (a.granularity != ScaleGranularity::PerRow || w.granularity != ScaleGranularity::PerRow)
    return "scales are not per row";
  if (cc_major != 9 || cc_minor != 0) return "OUTER_VEC_32F scales need sm_90";
  if (K % 16 != 0) return "K % 16 != 0";
  if (OC % 4 != 0) return "OC % 4 != 0";
  if (!aligned16(a.codes) || !aligned16(w.codes) || !aligned16(a.scales) || !aligned16(w.scales) || !aligned16(out))
    return "a pointer is not 16-byte aligned";
  return {};
}

GemmShape fp8_shape(const float* out, const QuantRef& a, const QuantRef& w, int N, int K, int OC) {
  GemmShape s = GemmShape::of(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, K, K, K, OC, w.codes, a.codes, out, fp8_type(w.format),
                              fp8_type(a.format));
  s.outer_vec = true;
  return s;
}

struct DeviceArch {
  int major = 0, minor = 0;
};
DeviceArch arch_of(int device) {
  DeviceArch d;
  ECO_CUDA_CHECK(cudaDeviceGetAttribute(&d.major, cudaDevAttrComputeCapabilityMajor, device));
  ECO_CUDA_CHECK(cudaDeviceGetAttribute(&d.minor, cudaDevAttrComputeCapabilityMinor, device));
  return d;
}

// The row-major GEMM out[N,OC] = X[N,K]·W[OC,K]ᵀ in cuBLAS terms (see the top of the file).
GemmShape nt_shape(cudaDataType_t in_type, const void* x, const void* w, const float* out, int N, int K, int OC) {
  return GemmShape::of(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, K, K, K, OC, w, x, out, in_type, in_type);
}

std::string dims(int N, int K, int OC) {
  return "N=" + std::to_string(N) + " K=" + std::to_string(K) + " OC=" + std::to_string(OC);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// fp32 linear layer

void CudaOps::matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C,
                             int OC) {
  if (N <= 0 || OC <= 0) return;
  if (C <= 0) {
    ECO_CUDA_CHECK(cudaMemsetAsync(out, 0, static_cast<size_t>(N) * OC * sizeof(float), stream_));
  } else {
    const GemmShape s = nt_shape(CUDA_R_32F, inp, weight, out, N, C, OC);
    lt_matmul(lt_, device_, stream_, workspace_, workspace_bytes_, s, weight, inp, out, 0.0f, nullptr, nullptr, false,
              "matmul_forward");
  }
  launch_epilogue(stream_, out, nullptr, 0, nullptr, 0, bias, N, OC);
}

void CudaOps::matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                              const float* weight, int N, int C, int OC) {
  if (N <= 0 || C < 0 || OC < 0) return;
  // dinp[N,C] = dout[N,OC]·W[OC,C]: column-major dinpᵀ (C×N) = Wᵀ(C×OC, W's bytes, op N)·doutᵀ (OC×N).
  if (dinp && C > 0) {
    if (OC == 0) {
      ECO_CUDA_CHECK(cudaMemsetAsync(dinp, 0, static_cast<size_t>(N) * C * sizeof(float), stream_));
    } else {
      const GemmShape s = GemmShape::of(CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, C, OC, C, weight, dout, dinp);
      lt_matmul(lt_, device_, stream_, workspace_, workspace_bytes_, s, weight, dout, dinp, 0.0f, nullptr, nullptr,
                false, "matmul_backward (dinp)");
    }
  }
  // dweight[OC,C] += doutᵀ·inp: column-major dWᵀ (C×OC) += inpᵀ (C×N, op N)·dout (N×OC: dout's
  // bytes, OC×N, op T). beta = 1 accumulates in place.
  if (C > 0 && OC > 0) {
    const GemmShape s = GemmShape::of(CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, C, OC, C, inp, dout, dweight);
    lt_matmul(lt_, device_, stream_, workspace_, workspace_bytes_, s, inp, dout, dweight, 1.0f, nullptr, nullptr,
              false, "matmul_backward (dweight)");
  }
  if (dbias && OC > 0) {
    const dim3 block(kBiasCols, kBiasSlices);
    bias_grad_kernel<<<(OC + kBiasCols - 1) / kBiasCols, block, 0, stream_>>>(dbias, dout, N, OC);
    ECO_CUDA_CHECK_LAUNCH("bias_grad_kernel");
  }
}

// ---------------------------------------------------------------------------------------------
// Quantized forward GEMM

void CudaOps::quantized_matmul_forward(float* out, const QuantRef& a, const QuantRef& w, const float* bias, int N,
                                       int K, int OC) {
  if (a.rows != static_cast<size_t>(N) || a.cols != static_cast<size_t>(K) || w.rows != static_cast<size_t>(OC) ||
      w.cols != static_cast<size_t>(K))
    throw Error("quantized_matmul_forward: operands " + std::to_string(a.rows) + "x" + std::to_string(a.cols) +
                " and " + std::to_string(w.rows) + "x" + std::to_string(w.cols) + " do not fit " + dims(N, K, OC));
  if (N <= 0 || OC <= 0) return;
  if (K <= 0) {
    ECO_CUDA_CHECK(cudaMemsetAsync(out, 0, static_cast<size_t>(N) * OC * sizeof(float), stream_));
    launch_epilogue(stream_, out, nullptr, 0, nullptr, 0, bias, N, OC);
    return;
  }
  if (!a.codes || !w.codes || (format_is_scaled(a.format) && !a.scales) || (format_is_scaled(w.format) && !w.scales))
    throw Error("quantized_matmul_forward: an operand has no codes or no scales (" + dims(N, K, OC) + ")");

  // Block scales vary along K, or a packed low-bit operand: dequantize both operands to fp32
  // (transiently) and run the fp32 GEMM.
  if (!factorable(a) || !factorable(w)) {
    const size_t a_bytes = round_up(a.numel() * sizeof(float), 256);
    Scratch scratch(a_bytes + w.numel() * sizeof(float), stream_);
    float* af = scratch.at<float>(0);
    float* wf = scratch.at<float>(a_bytes);
    dequantize_rows(af, a, 0, a.rows);
    dequantize_rows(wf, w, 0, w.rows);
    matmul_forward(out, af, wf, bias, N, K, OC);
    return;
  }

  // FP8 tensor cores with per-row scales applied by cuBLASLt.
  const DeviceArch arch = arch_of(device_);
  if (fp8_blocker(arch.major, arch.minor, out, a, w, K, OC).empty()) {
    const GemmShape s = fp8_shape(out, a, w, N, K, OC);
    if (lt_matmul(lt_, device_, stream_, workspace_, workspace_bytes_, s, w.codes, a.codes, out, 0.0f, w.scales,
                  a.scales, true, "quantized_matmul_forward")) {
      launch_epilogue(stream_, out, nullptr, 0, nullptr, 0, bias, N, OC);
      return;
    }
  }

  // Codes widened to BF16 (exact), fp32 accumulation, then out = acc·sa[n]·sw[o] + bias[o].
  const size_t a_bytes = a.format == QuantFormat::BF16 ? 0 : round_up(a.numel() * 2, 256);
  const size_t w_bytes = w.format == QuantFormat::BF16 ? 0 : w.numel() * 2;
  Scratch scratch(a_bytes + w_bytes, stream_);
  const void* ab = as_bf16(a, scratch.at<uint16_t>(0), stream_);
  const void* wb = as_bf16(w, scratch.at<uint16_t>(a_bytes), stream_);
  const GemmShape s = nt_shape(CUDA_R_16BF, ab, wb, out, N, K, OC);
  lt_matmul(lt_, device_, stream_, workspace_, workspace_bytes_, s, wb, ab, out, 0.0f, nullptr, nullptr, false,
            "quantized_matmul_forward (bf16)");
  int a_stride = 0, w_stride = 0;
  const float* sa = scale_vector(a, &a_stride);
  const float* sw = scale_vector(w, &w_stride);
  launch_epilogue(stream_, out, sa, a_stride, sw, w_stride, bias, N, OC);
}

std::string quantized_matmul_path(int device, const QuantRef& a, const QuantRef& w, int N, int K, int OC) {
  if (a.lowbit() || w.lowbit()) return "fp32 (low-bit weights: dequantized operands, fp32 GEMM)";
  if (!factorable(a) || !factorable(w)) return "fp32 (block scales: dequantized operands, fp32 GEMM)";
  const DeviceArch arch = arch_of(device);
  const std::string blocker = fp8_blocker(arch.major, arch.minor, nullptr, a, w, K, OC);
  if (!blocker.empty()) return "bf16 (" + blocker + ")";
  const GemmShape s = fp8_shape(nullptr, a, w, N, K, OC);
  std::lock_guard<std::mutex> lock(g_plan_mutex);
  for (const auto& [key, plan] : plan_cache()) {
    // Any cached FP8 plan of this device, shape and type pair tells the story, whatever the
    // pointers' alignment class.
    if (std::get<0>(key) == device && std::get<12>(key) && std::get<3>(key) == s.m && std::get<4>(key) == s.n &&
        std::get<5>(key) == s.k && std::get<9>(key) == static_cast<int>(s.a_type) &&
        std::get<10>(key) == static_cast<int>(s.b_type))
      return plan->supported ? "fp8 cuBLASLt (OUTER_VEC_32F per-row scales)" : "bf16 fallback (" + plan->why + ")";
  }
  return "fp8 cuBLASLt (OUTER_VEC_32F per-row scales; not run yet at this shape)";
}

}  // namespace eco::cuda
