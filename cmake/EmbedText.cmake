# Turns a text file into a C++ source that returns it as a std::string_view,
# so that a program carries the file (the status page) without reading it at
# run time. Run at build time by a custom command:
#
#   cmake -DINPUT=page.html -DOUTPUT=page.cpp -DINCLUDE=molt/host/net/status_page.hpp
#         -DFUNCTION=molt::host::status_page_html -P EmbedText.cmake
#
# writes `std::string_view FUNCTION() noexcept` (declared in INCLUDE) around a
# raw string literal of the file's bytes. Nothing is escaped, so the file must
# not contain the literal's closing sequence; it is checked, and the build
# stops naming the file if it does. OUTPUT is rewritten only when it changes.
foreach(variable INPUT OUTPUT INCLUDE FUNCTION)
  if(NOT DEFINED ${variable})
    message(FATAL_ERROR "EmbedText.cmake: -D${variable}=... is required")
  endif()
endforeach()

file(READ "${INPUT}" text)
set(delimiter "molt_embed")
string(FIND "${text}" ")${delimiter}\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "EmbedText.cmake: ${INPUT} contains ')${delimiter}\"', which would end the raw string literal")
endif()

file(WRITE "${OUTPUT}.tmp"
"// Generated at build time by cmake/EmbedText.cmake from ${INPUT}; edit that file instead.
#include \"${INCLUDE}\"

namespace {
constexpr char kText[] = R\"${delimiter}(${text})${delimiter}\";
}  // namespace

std::string_view ${FUNCTION}() noexcept { return {kText, sizeof kText - 1}; }
")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
