# molt_add_fixture_tests(MODULE <module> DIRECTORY <dir> [TARGETS <targets>...])
#
# Registers one ctest test per version-pair migration fixture of <module>
# (docs/fixtures.md): each directory <dir>/<module>/<from>-<to>/ becomes the
# test "fixture: <module> <from>-<to>" (label "fixture"), which runs
# molt-fixture-test on it. A relative <dir> is relative to the current source
# directory. Call enable_testing() in the top-level CMakeLists.txt, or no test
# is written.
#
# TARGETS are the plugin targets that build <module>'s versions. Each test is
# given all their images and takes the two its fixture needs by the version
# each image declares. Default: <module>_v<N> for every version N a fixture
# names, the targets molt_add_plugin() makes; one that does not exist is a
# configuration error. The tests run the files these targets build, so
# `cmake --build` then `ctest` checks the code just built.
#
# The directories are globbed with CONFIGURE_DEPENDS: a fixture captured later
# becomes a test at the next build. Files in <dir>/<module>/ are ignored; a
# directory not named <from>-<to> is a configuration error (it would never
# run); no fixture at all is a warning.
function(molt_add_fixture_tests)
  cmake_parse_arguments(PARSE_ARGV 0 ARG "" "MODULE;DIRECTORY" "TARGETS")
  if(ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "molt_add_fixture_tests: unexpected arguments: ${ARG_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT ARG_MODULE MATCHES "^[a-z0-9_-]+$")
    message(FATAL_ERROR "molt_add_fixture_tests: MODULE must be a module name made of [a-z0-9_-], got '${ARG_MODULE}'")
  endif()
  if(NOT ARG_DIRECTORY)
    message(FATAL_ERROR "molt_add_fixture_tests(${ARG_MODULE}): DIRECTORY is required")
  endif()
  if(NOT TARGET molt::fixture_test)
    message(FATAL_ERROR "molt_add_fixture_tests(${ARG_MODULE}): no target molt::fixture_test (find_package(Molt) first)")
  endif()

  get_filename_component(root "${ARG_DIRECTORY}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  set(module_dir "${root}/${ARG_MODULE}")
  file(GLOB entries LIST_DIRECTORIES true CONFIGURE_DEPENDS "${module_dir}/*")
  set(pairs "")
  set(versions "")
  foreach(entry IN LISTS entries)
    if(NOT IS_DIRECTORY "${entry}")
      continue()
    endif()
    get_filename_component(pair "${entry}" NAME)
    set(from "")
    set(to "")
    if(pair MATCHES "^([1-9][0-9]*)-([1-9][0-9]*)$")
      set(from ${CMAKE_MATCH_1})
      set(to ${CMAKE_MATCH_2})
    endif()
    if(NOT from OR from EQUAL to)
      message(FATAL_ERROR "molt_add_fixture_tests(${ARG_MODULE}): ${entry}: a fixture directory is named "
                          "<from>-<to>, two different versions (e.g. 1-2)")
    endif()
    list(APPEND pairs "${pair}")
    list(APPEND versions ${from} ${to})
  endforeach()
  if(NOT pairs)
    # Not an error: a module has no fixture until its second version ships,
    # and the first capture, into this directory, adds the test at the next build.
    message(WARNING "molt_add_fixture_tests(${ARG_MODULE}): no fixture directory <from>-<to> in ${module_dir} yet: "
                    "no fixture tests")
    return()
  endif()
  list(SORT pairs)

  set(targets ${ARG_TARGETS})
  if(NOT targets)
    list(REMOVE_DUPLICATES versions)
    foreach(version IN LISTS versions)
      list(APPEND targets ${ARG_MODULE}_v${version})
    endforeach()
  endif()
  set(image_args "")
  foreach(target IN LISTS targets)
    if(NOT TARGET ${target})
      message(FATAL_ERROR "molt_add_fixture_tests(${ARG_MODULE}): no target ${target}: the fixtures in ${module_dir} "
                          "need every version they name, built with molt_add_plugin() (or name the targets with TARGETS)")
    endif()
    list(APPEND image_args --image "$<TARGET_FILE:${target}>")
  endforeach()

  foreach(pair IN LISTS pairs)
    set(name "fixture: ${ARG_MODULE} ${pair}")
    add_test(NAME "${name}"
             COMMAND "$<TARGET_FILE:molt::fixture_test>" --fixture "${module_dir}/${pair}" ${image_args})
    set_tests_properties("${name}" PROPERTIES LABELS fixture)
  endforeach()
endfunction()
