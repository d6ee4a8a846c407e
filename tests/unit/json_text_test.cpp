// json_text and utf8_safe: the one place host strings become JSON text, so
// that a byte that is not UTF-8 can never make moltd throw (and abort).
#include <catch2/catch.hpp>

#include <filesystem>

#include "molt/host/common/json_text.hpp"
#include "molt/host/control/control_handler.hpp"
#include "molt/host/net/metrics.hpp"
#include "molt/host/state/state_blob.hpp"

using namespace molt::host;
using namespace std::string_literals;

TEST_CASE("utf8_safe keeps valid UTF-8 as it is, multi-byte sequences included", "[json_text]") {
  for (const std::string& text : {""s, "plain ascii"s, "caf\xc3\xa9"s,        // é, 2 bytes
                                 "\xe2\x82\xac 5"s,                          // €, 3 bytes
                                 "\xed\x9f\xbf"s,                            // U+D7FF, the last before the surrogates
                                 "\xf0\x9f\x98\x80"s,                        // 😀, 4 bytes
                                 "\xf4\x8f\xbf\xbf"s,                        // U+10FFFF, the last code point
                                 "nul \0 inside"s, "\x7f"s}) {
    CAPTURE(text);
    CHECK(is_valid_utf8(text));
    CHECK(utf8_safe(text) == text);
  }
}

TEST_CASE("utf8_safe writes each byte that is not valid UTF-8 as \\xNN, lowercase", "[json_text]") {
  CHECK(utf8_safe("molt-\xff") == "molt-\\xff");
  CHECK(utf8_safe("\xfe\xff") == "\\xfe\\xff");
  CHECK(utf8_safe("a\x80z") == "a\\x80z");                            // a continuation byte alone
  CHECK(utf8_safe("\xc0\xaf") == "\\xc0\\xaf");                       // overlong '/'
  CHECK(utf8_safe("\xc1\xbf") == "\\xc1\\xbf");                       // overlong
  CHECK(utf8_safe("\xe0\x80\xaf") == "\\xe0\\x80\\xaf");              // overlong, 3 bytes
  CHECK(utf8_safe("\xf0\x80\x80\xaf") == "\\xf0\\x80\\x80\\xaf");     // overlong, 4 bytes
  CHECK(utf8_safe("\xed\xa0\x80") == "\\xed\\xa0\\x80");              // U+D800, a surrogate
  CHECK(utf8_safe("\xed\xbf\xbf") == "\\xed\\xbf\\xbf");              // U+DFFF
  CHECK(utf8_safe("\xf4\x90\x80\x80") == "\\xf4\\x90\\x80\\x80");     // past U+10FFFF
  CHECK(utf8_safe("\xf5\x80\x80\x80") == "\\xf5\\x80\\x80\\x80");
  CHECK(utf8_safe("\xe2\x82") == "\\xe2\\x82");                       // € cut short, at the end
  CHECK(utf8_safe("\xe2\x82x") == "\\xe2\\x82x");                     // and in the middle
  CHECK(utf8_safe("\xf0\x9f\x98") == "\\xf0\\x9f\\x98");              // 😀 cut short
  // What is valid around an invalid byte stays as it is.
  CHECK(utf8_safe("\xc3\xa9\xff\xe2\x82\xac") == "\xc3\xa9\\xff\xe2\x82\xac");
  for (const std::string& text : {"\xff"s, "\xe2\x82"s, "\xed\xa0\x80"s, "\xc0\xaf"s}) CHECK_FALSE(is_valid_utf8(text));
}

TEST_CASE("utf8_safe leaves backslashes alone: valid text never changes, so \\xff typed and 0xff look the same",
          "[json_text]") {
  CHECK(utf8_safe("C:\\dir\\xff") == "C:\\dir\\xff");          // valid: as it is
  CHECK(utf8_safe("a\\xff\xff") == "a\\xff\\xff");             // the text and the byte, alike once escaped
  CHECK(utf8_safe(utf8_safe("x\xff")) == utf8_safe("x\xff"));  // applying it again changes nothing
}

TEST_CASE("json_text dumps every string and key of nested values, each bad byte as \\xNN", "[json_text]") {
  const nlohmann::json value = {
      {"ok", false},
      {"error", "its directory /tmp/molt-\xff is writable"},
      {"reports", {{{"to_file", "/tmp/molt-\xff/kv-2.so"}, {"to", 0}}, "fine", "\xe2\x82"}},
      {"k\xfe", {{"deeper", {"\xc0\xaf", 1, nullptr}}}},
  };
  CHECK_THROWS_AS(value.dump(), nlohmann::json::type_error);  // what used to abort moltd
  const std::string text = json_text(value);
  CAPTURE(text);
  const auto parsed = nlohmann::json::parse(text);
  CHECK(parsed["error"] == "its directory /tmp/molt-\\xff is writable");
  CHECK(parsed["reports"][0]["to_file"] == "/tmp/molt-\\xff/kv-2.so");
  CHECK(parsed["reports"][0]["to"] == 0);
  CHECK(parsed["reports"][1] == "fine");
  CHECK(parsed["reports"][2] == "\\xe2\\x82");
  CHECK(parsed["k\\xfe"]["deeper"] == nlohmann::json{"\\xc0\\xaf", 1, nullptr});
  // In the text itself the backslash is JSON-escaped: the four characters \xff are "\\xff".
  CHECK(text.find(R"(molt-\\xff)") != std::string::npos);
}

TEST_CASE("json_text is dump() for valid values, indented or not, ordered or not", "[json_text]") {
  const nlohmann::json value = {{"b", {1, 2}}, {"a", "caf\xc3\xa9"}, {"c", {{"d", nullptr}}}};
  CHECK(json_text(value) == value.dump());
  CHECK(json_text(value, 2) == value.dump(2));
  nlohmann::ordered_json ordered = {{"z", 1}, {"a", "x\xff"}};
  CHECK(json_text(ordered) == R"({"z":1,"a":"x\\xff"})");  // the order kept
  ordered["a"] = "y";
  CHECK(json_text(ordered, 2) == ordered.dump(2));
}

TEST_CASE("hex_encode and hex_decode round-trip any bytes, hex_decode refuses what is not hex pairs", "[json_text]") {
  const std::string bytes = "/tmp/molt-\xff/\x01\x80kv-2.so"s + '\0' + "\xfe";
  CHECK(hex_encode("a\xff") == "61ff");
  CHECK(hex_decode(hex_encode(bytes)) == bytes);
  CHECK(hex_decode("61FF") == "a\xff"s);
  CHECK(hex_decode("") == ""s);
  CHECK_FALSE(hex_decode("6"));
  CHECK_FALSE(hex_decode("6g"));
  CHECK_FALSE(hex_decode("0x61"));
}

TEST_CASE("a path moltctl sends arrives in moltd byte for byte: file when UTF-8, file_hex otherwise", "[json_text]") {
  for (const std::string& path : {"/srv/molt/plugins/kv-2.so"s, "/srv/caf\xc3\xa9/kv-2.so"s, "/tmp/molt-\xff/kv-2.so"s,
                                 "/tmp/\xe2\x82/\\xff"s}) {
    CAPTURE(path);
    nlohmann::json request{{"command", "reload"}, {"module", "kv"}};
    put_file(request, path);
    CHECK(request.contains(is_valid_utf8(path) ? "file" : "file_hex"));
    // Through the wire: as moltctl writes it and moltd parses it.
    const auto received = nlohmann::json::parse(json_text(request));
    const FileField file = file_of(received);
    CHECK(file.error.empty());
    REQUIRE(file.path);
    CHECK(file.path->native() == path);
  }
  CHECK(file_of(nlohmann::json{{"command", "reload"}}).path == std::nullopt);
  CHECK(file_of(nlohmann::json{{"file_hex", "zz"}}).error == "file_hex must be a path's bytes in hex, two digits a byte");
  CHECK(file_of(nlohmann::json{{"file_hex", "6100"}}).error ==
        "file_hex must be a path's bytes in hex, two digits a byte");  // no NUL in a path
  CHECK(file_of(nlohmann::json{{"file", "/a"}, {"file_hex", "2f61"}}).error ==
        "give \"file\" or \"file_hex\", not both");
  CHECK(file_of(nlohmann::json{{"file", 7}}).error == "file must be a path");
}

TEST_CASE("a Prometheus label value is valid UTF-8: a bad byte as \\xNN, its backslash escaped", "[json_text]") {
  CHECK(escape_label_value("kv") == "kv");
  CHECK(escape_label_value("caf\xc3\xa9") == "caf\xc3\xa9");
  CHECK(escape_label_value("molt-\xff") == "molt-\\\\xff");
  CHECK(escape_label_value("a\"\n\\\xfe") == "a\\\"\\n\\\\\\\\xfe");
}

TEST_CASE("a state archive whose host part holds a bad byte is written, and reads back", "[json_text]") {
  StateBlob blob;
  blob.module = "batch";
  blob.version.value = 1;
  blob.schema.value = 1;
  blob.bytes = "state";
  // As encode_host_part() writes it (through json_text): a job's note, which is the module's text.
  blob.host = json_text(nlohmann::json{{"jobs", {{{"name", "sum"}, {"note", "at /tmp/x\xff"}}}}, {"timers", nlohmann::json::array()}});
  const std::string file = encode_state_file(blob);
  const auto read = decode_state_file(file, 1 << 20);
  REQUIRE(read);
  CHECK(nlohmann::json::parse(read->host)["jobs"][0]["note"] == "at /tmp/x\\xff");
  CHECK(read->bytes == "state");
}
