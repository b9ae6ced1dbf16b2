#define PCRE2_CODE_UNIT_WIDTH 8
#include "ctcal/data/tokenizer_json.h"

#include <pcre2.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "ctcal/error.h"
#include "ctcal/io/checkpoint.h"
#include "ctcal/util/utf8.h"

namespace ctcal {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// ---- UTF-8 helpers ----
std::size_t utf8_len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c >> 5) == 0x6) return 2;
  if ((c >> 4) == 0xE) return 3;
  if ((c >> 3) == 0x1E) return 4;
  return 1;  // invalid lead byte: one byte
}

std::string utf8_encode(uint32_t cp) {
  std::string s;
  if (cp < 0x80) s += static_cast<char>(cp);
  else if (cp < 0x800) { s += static_cast<char>(0xC0 | (cp >> 6)); s += static_cast<char>(0x80 | (cp & 0x3F)); }
  else if (cp < 0x10000) { s += static_cast<char>(0xE0 | (cp >> 12)); s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F)); s += static_cast<char>(0x80 | (cp & 0x3F)); }
  else { s += static_cast<char>(0xF0 | (cp >> 18)); s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F)); s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F)); s += static_cast<char>(0x80 | (cp & 0x3F)); }
  return s;
}

// Splits a string into UTF-8 characters (an invalid byte is its own character).
std::vector<std::string> utf8_chars(const std::string& s) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < s.size();) {
    std::size_t n = std::min(utf8_len(static_cast<unsigned char>(s[i])), s.size() - i);
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 upwards.
const std::array<std::string, 256>& byte_to_unicode() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    uint32_t extra = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      t[b] = utf8_encode(printable ? b : extra++);
    }
    return t;
  }();
  return table;
}

InputError unsupported(const fs::path& file, const std::string& what) {
  return InputError(fmt::format("{}: {} is not supported by ctcal; supported: BPE model, normalizers "
                                "Prepend/Replace/Sequence, pre-tokenizers Split/ByteLevel/Metaspace/Sequence, "
                                "post-processors TemplateProcessing/ByteLevel/Sequence", file.string(), what));
}

// ---- PCRE2 regex ----
class Regex {
 public:
  Regex(const std::string& pattern, const fs::path& file) {
    int err = 0;
    PCRE2_SIZE off = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(),
                          PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &off, nullptr);
    if (!code_) {
      PCRE2_UCHAR buf[256];
      pcre2_get_error_message(err, buf, sizeof(buf));
      throw InputError(fmt::format("{}: pre-tokenizer regex does not compile at offset {}: {}", file.string(), off,
                                   reinterpret_cast<char*>(buf)));
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // best effort: falls back to the interpreter
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Non-overlapping matches [begin, end) in order.
  std::vector<std::pair<std::size_t, std::size_t>> find_all(const std::string& s) const {
    std::vector<std::pair<std::size_t, std::size_t>> out;
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    std::size_t pos = 0;
    while (pos <= s.size()) {
      // The subject was sanitised once; skipping PCRE2's per-call UTF check keeps this linear.
      int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos, PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc < 0) break;
      PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      if (ov[1] == ov[0]) {  // empty match: step one character
        pos = ov[0] + (ov[0] < s.size() ? utf8_len(static_cast<unsigned char>(s[ov[0]])) : 1);
        continue;
      }
      out.emplace_back(ov[0], ov[1]);
      pos = ov[1];
    }
    pcre2_match_data_free(md);
    return out;
  }

 private:
  pcre2_code* code_ = nullptr;
};

struct PreTokenizer {
  std::string type;  // Split, ByteLevel, Metaspace
  std::unique_ptr<Regex> regex;
  std::string behavior = "Isolated";
  bool invert = false;
  bool add_prefix_space = false, use_regex = false;
  std::string replacement = "\xE2\x96\x81", prepend_scheme = "always";
  bool split = true;
};

struct AddedToken {
  int32_t id;
  std::string content;
  bool special, lstrip, rstrip;
};

class JsonTokenizer : public Tokenizer {
 public:
  JsonTokenizer(const json& j, const fs::path& file) : file_(file) {
    if (!j.is_object()) throw InputError(fmt::format("{}: expected a JSON object", file.string()));
    load_model(j.at("model"));
    if (j.contains("added_tokens"))
      for (const auto& t : j["added_tokens"]) {
        AddedToken a{t.at("id").get<int32_t>(), t.at("content").get<std::string>(), t.value("special", false),
                     t.value("lstrip", false), t.value("rstrip", false)};
        if (t.value("single_word", false)) throw unsupported(file, "an added token with single_word: true");
        added_.push_back(a);
        id_to_token_[a.id] = a.content;
        vocab_size_ = std::max<int64_t>(vocab_size_, a.id + 1);
      }
    std::sort(added_.begin(), added_.end(), [](const auto& a, const auto& b) { return a.content.size() > b.content.size(); });
    for (const auto& a : added_)
      if (!a.content.empty()) added_first_byte_[static_cast<unsigned char>(a.content[0])] = true;
    load_normalizer(j.value("normalizer", json(nullptr)));
    load_pre_tokenizer(j.value("pre_tokenizer", json(nullptr)));
    load_post_processor(j.value("post_processor", json(nullptr)));
  }

  std::vector<int32_t> encode(const std::string& raw, bool special) const override {
    const std::string text = sanitize_utf8(raw);
    std::vector<int32_t> ids;
    if (special) ids.insert(ids.end(), prefix_.begin(), prefix_.end());
    bool first_segment = true;
    std::size_t seg_start = 0, i = 0;
    auto flush = [&](std::size_t end) {
      if (end > seg_start) encode_segment(text.substr(seg_start, end - seg_start), first_segment, &ids);
      first_segment = false;
    };
    while (i < text.size()) {
      const AddedToken* hit = nullptr;
      if (!added_first_byte_[static_cast<unsigned char>(text[i])]) { ++i; continue; }
      for (const auto& a : added_)
        if (text.compare(i, a.content.size(), a.content) == 0) { hit = &a; break; }  // longest first
      if (!hit) { i += utf8_len(static_cast<unsigned char>(text[i])); continue; }
      std::size_t end = i, next = i + hit->content.size();
      if (hit->lstrip) while (end > seg_start && std::isspace(static_cast<unsigned char>(text[end - 1]))) --end;
      if (hit->rstrip) while (next < text.size() && std::isspace(static_cast<unsigned char>(text[next]))) ++next;
      flush(end);
      ids.push_back(hit->id);
      seg_start = i = next;
    }
    flush(text.size());
    if (special) ids.insert(ids.end(), suffix_.begin(), suffix_.end());
    return ids;
  }
  std::string piece(int32_t id) const override {
    auto it = id_to_token_.find(id);
    return it == id_to_token_.end() ? fmt::format("<{}>", id) : it->second;
  }
  int64_t vocab_size() const override { return vocab_size_; }
  std::string describe() const override {
    return fmt::format("tokenizer.json {} (BPE, {} tokens, {} merges, BOS {})", file_.string(), vocab_size_, ranks_.size(),
                       prefix_.empty() ? "not added by the post-processor" : "added");
  }

 private:
  void load_model(const json& m) {
    if (m.value("type", "") != "BPE") throw unsupported(file_, fmt::format("model type {}", m.value("type", json("?")).dump()));
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (m.contains(k) && !m[k].is_null() && m[k] != "") throw unsupported(file_, fmt::format("BPE {}", k));
    if (m.contains("dropout") && !m["dropout"].is_null() && m["dropout"].get<double>() > 0) throw unsupported(file_, "BPE dropout");
    for (const auto& [tok, id] : m.at("vocab").items()) {
      vocab_[tok] = id.get<int32_t>();
      id_to_token_[id.get<int32_t>()] = tok;
      vocab_size_ = std::max<int64_t>(vocab_size_, id.get<int64_t>() + 1);
    }
    ignore_merges_ = m.value("ignore_merges", false);
    byte_fallback_ = m.value("byte_fallback", false);
    fuse_unk_ = m.value("fuse_unk", false);
    if (m.contains("unk_token") && m["unk_token"].is_string()) unk_ = vocab_.at(m["unk_token"].get<std::string>());
    int32_t rank = 0;
    for (const auto& mg : m.at("merges")) {
      std::string a, b;
      if (mg.is_string()) {
        const auto s = mg.get<std::string>();
        const auto sp = s.find(' ');
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else {
        a = mg.at(0).get<std::string>();
        b = mg.at(1).get<std::string>();
      }
      auto ia = vocab_.find(a), ib = vocab_.find(b), im = vocab_.find(a + b);
      if (ia == vocab_.end() || ib == vocab_.end() || im == vocab_.end())
        throw InputError(fmt::format("{}: merge '{} {}' uses tokens missing from the vocabulary", file_.string(), a, b));
      ranks_.emplace(key(ia->second, ib->second), std::make_pair(rank++, im->second));
    }
  }
  void load_normalizer(const json& n) {
    if (n.is_null()) return;
    const std::string t = n.value("type", "");
    if (t == "Sequence") { for (const auto& x : n.at("normalizers")) load_normalizer(x); return; }
    if (t == "Prepend") { normalizers_.push_back({"Prepend", n.at("prepend").get<std::string>(), ""}); return; }
    if (t == "Replace") {
      if (!n.at("pattern").contains("String")) throw unsupported(file_, "a Replace normalizer with a regex pattern");
      normalizers_.push_back({"Replace", n["pattern"]["String"].get<std::string>(), n.at("content").get<std::string>()});
      return;
    }
    throw unsupported(file_, fmt::format("normalizer '{}'", t));
  }
  void load_pre_tokenizer(const json& p) {
    if (p.is_null()) return;
    const std::string t = p.value("type", "");
    if (t == "Sequence") { for (const auto& x : p.at("pretokenizers")) load_pre_tokenizer(x); return; }
    auto pt = std::make_unique<PreTokenizer>();
    pt->type = t;
    if (t == "Split") {
      if (!p.at("pattern").contains("Regex")) {
        pt->regex = std::make_unique<Regex>(escape(p["pattern"].at("String").get<std::string>()), file_);
      } else {
        pt->regex = std::make_unique<Regex>(p["pattern"]["Regex"].get<std::string>(), file_);
      }
      pt->behavior = p.value("behavior", "Isolated");
      pt->invert = p.value("invert", false);
      if (pt->behavior != "Isolated" || pt->invert) throw unsupported(file_, fmt::format("Split behavior {} / invert", pt->behavior));
    } else if (t == "ByteLevel") {
      pt->add_prefix_space = p.value("add_prefix_space", false);
      pt->use_regex = p.value("use_regex", true);
      if (pt->use_regex)
        pt->regex = std::make_unique<Regex>(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)", file_);
      byte_level_ = true;
    } else if (t == "Metaspace") {
      pt->replacement = p.value("replacement", "\xE2\x96\x81");
      pt->prepend_scheme = p.value("prepend_scheme", p.value("add_prefix_space", true) ? "always" : "never");
      pt->split = p.value("split", true);
    } else {
      throw unsupported(file_, fmt::format("pre-tokenizer '{}'", t));
    }
    pre_.push_back(std::move(pt));
  }
  void load_post_processor(const json& p) {
    if (p.is_null()) return;
    const std::string t = p.value("type", "");
    if (t == "Sequence") { for (const auto& x : p.at("processors")) load_post_processor(x); return; }
    if (t == "ByteLevel") return;  // offsets only
    if (t != "TemplateProcessing") throw unsupported(file_, fmt::format("post-processor '{}'", t));
    bool seen_sequence = false;
    for (const auto& item : p.at("single")) {
      if (item.contains("Sequence")) { seen_sequence = true; continue; }
      const std::string name = item.at("SpecialToken").at("id");
      for (const auto& id : p.at("special_tokens").at(name).at("ids")) (seen_sequence ? suffix_ : prefix_).push_back(id.get<int32_t>());
    }
  }
  static std::string escape(const std::string& s) {
    std::string out;
    for (char c : s) {
      if (std::string("\\^$.|?*+()[]{}").find(c) != std::string::npos) out += '\\';
      out += c;
    }
    return out;
  }
  static uint64_t key(int32_t a, int32_t b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }

  // Normalize, pre-tokenize and BPE one segment between added tokens.
  void encode_segment(std::string s, bool first_segment, std::vector<int32_t>* ids) const {
    for (const auto& n : normalizers_) {
      if (n.type == "Prepend") { if (!s.empty()) s = n.a + s; }
      else {
        std::string out;
        for (std::size_t i = 0; i < s.size();) {
          if (!n.a.empty() && s.compare(i, n.a.size(), n.a) == 0) { out += n.b; i += n.a.size(); }
          else out += s[i++];
        }
        s = out;
      }
    }
    std::vector<std::string> pieces = {s};
    for (const auto& pt : pre_) {
      std::vector<std::string> next;
      for (const auto& piece : pieces) {
        if (pt->type == "Metaspace") {
          std::string r;
          for (char c : piece) r += c == ' ' ? pt->replacement : std::string(1, c);
          if ((pt->prepend_scheme == "always" || (pt->prepend_scheme == "first" && first_segment)) && !r.starts_with(pt->replacement))
            r = pt->replacement + r;
          if (!pt->split) { next.push_back(r); continue; }
          // MergedWithNext: each replacement starts a new piece.
          std::size_t start = 0;
          for (std::size_t k = pt->replacement.size(); k <= r.size(); ++k)
            if (k == r.size() || r.compare(k, pt->replacement.size(), pt->replacement) == 0) {
              if (k > start) next.push_back(r.substr(start, k - start));
              start = k;
              if (k == r.size()) break;
            }
          continue;
        }
        std::string p = piece;
        if (pt->type == "ByteLevel" && pt->add_prefix_space && !p.starts_with(" ")) p = " " + p;
        if (pt->regex) {
          std::size_t last = 0;
          for (auto [b, e] : pt->regex->find_all(p)) {
            if (b > last) next.push_back(p.substr(last, b - last));
            next.push_back(p.substr(b, e - b));
            last = e;
          }
          if (last < p.size()) next.push_back(p.substr(last));
        } else {
          next.push_back(p);
        }
      }
      pieces = std::move(next);
    }
    for (const auto& piece : pieces) {
      std::string word = piece;
      if (byte_level_) {
        word.clear();
        for (unsigned char c : piece) word += byte_to_unicode()[c];
      }
      bpe(word, ids);
    }
  }

  void bpe(const std::string& word, std::vector<int32_t>* ids) const {
    if (word.empty()) return;
    if (ignore_merges_) {
      auto it = vocab_.find(word);
      if (it != vocab_.end()) { ids->push_back(it->second); return; }
    }
    {
      std::lock_guard<std::mutex> lock(cache_mu_);
      auto it = cache_.find(word);
      if (it != cache_.end()) { ids->insert(ids->end(), it->second.begin(), it->second.end()); return; }
    }
    std::vector<int32_t> sym;
    for (const auto& ch : utf8_chars(word)) {
      auto it = vocab_.find(ch);
      if (it != vocab_.end()) { sym.push_back(it->second); continue; }
      if (byte_fallback_) {
        bool all = true;
        std::vector<int32_t> bytes;
        for (unsigned char c : ch) {
          auto b = vocab_.find(fmt::format("<0x{:02X}>", c));
          if (b == vocab_.end()) { all = false; break; }
          bytes.push_back(b->second);
        }
        if (all) { sym.insert(sym.end(), bytes.begin(), bytes.end()); continue; }
      }
      if (unk_ < 0) throw InputError(fmt::format("{}: character '{}' is not in the vocabulary and there is no unk_token", file_.string(), ch));
      if (!(fuse_unk_ && !sym.empty() && sym.back() == unk_)) sym.push_back(unk_);
    }
    // Repeatedly merge the adjacent pair of lowest rank (leftmost on ties).
    while (sym.size() > 1) {
      int32_t best_rank = INT32_MAX, merged = -1;
      std::size_t at = 0;
      for (std::size_t k = 0; k + 1 < sym.size(); ++k) {
        auto it = ranks_.find(key(sym[k], sym[k + 1]));
        if (it != ranks_.end() && it->second.first < best_rank) {
          best_rank = it->second.first;
          merged = it->second.second;
          at = k;
        }
      }
      if (merged < 0) break;
      sym[at] = merged;
      sym.erase(sym.begin() + static_cast<std::ptrdiff_t>(at) + 1);
    }
    ids->insert(ids->end(), sym.begin(), sym.end());
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() < 100000) cache_.emplace(word, sym);
  }

  struct Normalizer {
    std::string type, a, b;
  };
  fs::path file_;
  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<int32_t, std::string> id_to_token_;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> ranks_;  // (a, b) -> (rank, merged id)
  std::vector<AddedToken> added_;
  std::array<bool, 256> added_first_byte_{};  // quick reject before comparing added tokens
  std::vector<Normalizer> normalizers_;
  std::vector<std::unique_ptr<PreTokenizer>> pre_;
  std::vector<int32_t> prefix_, suffix_;
  int64_t vocab_size_ = 0;
  int32_t unk_ = -1;
  bool ignore_merges_ = false, byte_fallback_ = false, fuse_unk_ = false, byte_level_ = false;
  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

// Any JSON type error inside (a field of the wrong type) becomes an InputError naming the file.
std::unique_ptr<Tokenizer> parse_tokenizer_json_value(const json& j, const fs::path& file) {
  try {
    return std::make_unique<JsonTokenizer>(j, file);
  } catch (const json::exception& e) {
    throw InputError(fmt::format("{}: malformed tokenizer.json: {}", file.string(), e.what()));
  }
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer_json(const fs::path& file) {
  return parse_tokenizer_json_value(read_json_file(file), file);
}

std::unique_ptr<Tokenizer> parse_tokenizer_json(const std::string& text, const std::string& where) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) throw InputError(fmt::format("{}: not valid JSON", where));
  return parse_tokenizer_json_value(j, where);
}

}  // namespace ctcal
