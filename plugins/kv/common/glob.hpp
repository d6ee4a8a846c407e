// Redis's glob patterns (util.c: stringmatchlen), for CONFIG GET: '*', '?',
// "[...]" with '^', ranges and '\' escapes, and '\' before any character.
#pragma once

#include <string_view>

namespace kv {

enum class Case { Sensitive, Insensitive };

/// Whether `text` matches `pattern`, exactly as Redis's stringmatchlen
/// decides, quirks included (an unclosed '[' ends at the pattern's end; an
/// empty text matches only an empty pattern). In time O(pattern x text) at
/// worst, never exponential: each '*' is tried from the last one only
/// (a star that leaves the rest unmatched anywhere cannot be helped by an
/// earlier star matching more).
bool glob_match(std::string_view pattern, std::string_view text, Case mode);

}  // namespace kv
