// "Did you mean" for unknown config keys: optimal-string-alignment distance (edits plus adjacent
// transpositions, the commonest typo) over the full key, falling back to the last component so a
// key put in the wrong section ("train.lr") still finds its home ("optim.lr").
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "core/config.h"

namespace eco {
namespace {

size_t osa_distance(const std::string& a, const std::string& b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[n][m];
}

std::string last_component(const std::string& key) {
  const size_t dot = key.rfind('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

// Edits allowed before a name stops looking like a typo of another: 1 for short names, up to 3.
size_t tolerance(const std::string& s) { return std::min<size_t>(3, 1 + s.size() / 4); }

size_t depth(const std::string& key) { return static_cast<size_t>(std::count(key.begin(), key.end(), '.')); }

// The candidate nearest to `given` under `project` (identity or last component), among those
// `eligible`, within tolerance (or exactly equal when `exact`).
template <typename Project, typename Eligible>
std::string nearest(const std::string& given, const std::vector<std::string>& candidates, Project project,
                    Eligible eligible, bool exact) {
  const std::string g = project(given);
  std::string best;
  size_t best_d = exact ? 1 : tolerance(g) + 1;
  size_t best_full = SIZE_MAX;
  for (const std::string& c : candidates) {
    if (!eligible(c)) continue;
    const size_t d = osa_distance(g, project(c));
    const size_t full = osa_distance(given, c);
    if (d < best_d || (d == best_d && !best.empty() && full < best_full)) {
      best_d = d;
      best_full = full;
      best = c;
    }
  }
  return best;
}

}  // namespace

std::string suggest_key(const std::string& given, const std::vector<std::string>& candidates) {
  // A name this long is no typo, and the distance table grows with its length times a key's (a
  // key in a config file can be megabytes long).
  if (given.size() > 256) return "";
  auto identity = [](const std::string& k) { return k; };
  auto leaves = [](const std::string& c) { return depth(c) > 0; };
  auto same_depth = [&](const std::string& c) { return depth(c) == depth(given); };
  // The right name in the wrong place ("train.lr", "steps") is the likeliest mistake.
  std::string s = nearest(given, candidates, last_component, leaves, /*exact=*/true);
  if (s.empty()) s = nearest(given, candidates, identity, same_depth, false);
  if (s.empty()) s = nearest(given, candidates, last_component, leaves, false);
  return s;
}

}  // namespace eco
