# Warnings and sanitizers for project code only (never forced on consumers of the package).
add_library(herdguard_build_flags INTERFACE)
target_compile_options(herdguard_build_flags INTERFACE -Wall -Wextra -Wpedantic)
if(HERDGUARD_WERROR)
  target_compile_options(herdguard_build_flags INTERFACE -Werror)
endif()

if(HERDGUARD_SANITIZER STREQUAL "address")
  set(_hg_san -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)
elseif(HERDGUARD_SANITIZER STREQUAL "thread")
  set(_hg_san -fsanitize=thread -fno-omit-frame-pointer)
elseif(NOT HERDGUARD_SANITIZER STREQUAL "")
  message(FATAL_ERROR "HERDGUARD_SANITIZER must be '', 'address' or 'thread', not '${HERDGUARD_SANITIZER}'")
endif()
if(DEFINED _hg_san)
  # Applied globally so that every object (library, tests, gtest main) is instrumented alike.
  add_compile_options(${_hg_san})
  add_link_options(${_hg_san})
endif()
