# molt_add_plugin(<module> VERSION <n> SOURCES <files>...
#                 [LIBRARIES <targets>...] [OUTPUT_DIRECTORY <dir>]
#                 [STATE_HEADERS <files>...] [VARIANT <name>])
#
# Builds version <n> of module <module> as a loadable image named
# <module>-<n>.so, in <dir> (default: ${CMAKE_BINARY_DIR}/plugins). The CMake
# target is <module>_v<n>.
#
# VARIANT builds one more image of the same version, for tests that need
# several builds of one version (tests/plugins: faulty): the image is
# <module>-<n>-<name>.so and the target <module>_v<n>_<name> (each '-' in the
# name becomes '_' there). Give the variant its differences with
# target_compile_definitions() on that target.
#
# The flags are what make two versions of one module safe in one process:
#  - hidden visibility (also for inline functions): otherwise both versions
#    export the same symbols (their state's serialize(), Boost singletons) and
#    the dynamic linker binds v2's calls to v1's code;
#  - -fno-gnu-unique: g++ marks some template statics STB_GNU_UNIQUE, and an
#    image holding one is never unloaded by dlclose;
#  - a version script (molt_plugin.map) exporting only the three entry
#    points: libstdc++ and Boost headers force default visibility on their
#    templates, which hidden visibility alone leaves exported.
# The image links Boost.Serialization and spdlog as shared libraries, shared
# with the host, never statically. It also gets MOLT_BUILD_MODULE_NAME and
# MOLT_BUILD_MODULE_VERSION, which MOLT_MODULE() checks against the class.
#
# STATE_HEADERS lists every file that defines the type of a StatefulModule's
# state. Their SHA-256 goes into the state's layout fingerprint, so that two
# versions built from the same definition can hand the state over in memory,
# and any edit to it (even a comment) makes the host serialize instead.
function(molt_add_plugin module)
  cmake_parse_arguments(PARSE_ARGV 1 ARG "" "VERSION;OUTPUT_DIRECTORY;VARIANT" "SOURCES;LIBRARIES;STATE_HEADERS")
  if(NOT module MATCHES "^[a-z0-9_-]+$")
    message(FATAL_ERROR "molt_add_plugin: module name '${module}' must be made of [a-z0-9_-]")
  endif()
  if(NOT ARG_VERSION MATCHES "^[1-9][0-9]*$")
    message(FATAL_ERROR "molt_add_plugin(${module}): VERSION must be a positive integer, got '${ARG_VERSION}'")
  endif()
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "molt_add_plugin(${module}): SOURCES is required")
  endif()
  if(DEFINED ARG_VARIANT AND NOT ARG_VARIANT MATCHES "^[a-z0-9_-]+$")
    message(FATAL_ERROR "molt_add_plugin(${module}): VARIANT '${ARG_VARIANT}' must be made of [a-z0-9_-]")
  endif()
  if(NOT ARG_OUTPUT_DIRECTORY)
    set(ARG_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}/plugins")
  endif()

  set(version_script "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/molt_plugin.map")
  set(target ${module}_v${ARG_VERSION})
  set(file_name "${module}-${ARG_VERSION}")
  if(ARG_VARIANT)
    string(REPLACE "-" "_" variant_id "${ARG_VARIANT}")
    string(APPEND target "_${variant_id}")
    string(APPEND file_name "-${ARG_VARIANT}")
  endif()
  add_library(${target} MODULE ${ARG_SOURCES})
  target_link_libraries(${target} PRIVATE molt::plugin_api ${ARG_LIBRARIES})
  target_compile_features(${target} PRIVATE cxx_std_20)
  target_compile_options(${target} PRIVATE -fno-gnu-unique)
  target_compile_definitions(${target} PRIVATE MOLT_BUILD_MODULE_NAME="${module}"
                                               MOLT_BUILD_MODULE_VERSION=${ARG_VERSION})
  target_link_options(${target} PRIVATE "-Wl,--version-script=${version_script}")
  set_property(TARGET ${target} APPEND PROPERTY LINK_DEPENDS "${version_script}")
  if(ARG_STATE_HEADERS)
    set(definition "")
    foreach(header IN LISTS ARG_STATE_HEADERS)
      get_filename_component(header "${header}" ABSOLUTE)
      file(READ "${header}" text)
      string(APPEND definition "${text}")
      set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${header}")  # edits re-hash
    endforeach()
    string(SHA256 definition_hash "${definition}")
    target_compile_definitions(${target} PRIVATE MOLT_STATE_DEFINITION_HASH="${definition_hash}")
  endif()
  set_target_properties(${target} PROPERTIES
    PREFIX ""
    OUTPUT_NAME "${file_name}"
    LIBRARY_OUTPUT_DIRECTORY "${ARG_OUTPUT_DIRECTORY}"
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
endfunction()
