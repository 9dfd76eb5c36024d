# Compiles a file into the binary: cmake -DIN=file -DOUT_C=x.c -DOUT_H=x.h
# -DNAME=sym -P embed.cmake writes OUT_H (declarations, which never change)
# and OUT_C with `const unsigned char NAME[]` (the bytes plus a NUL),
# `const size_t NAME_len` and `const char NAME_etag[]` (a quoted strong
# ETag: the first 32 hex digits of the SHA-256 of the bytes). Pure CMake:
# no xxd needed. Files are replaced only when their text changes.
foreach(v IN ITEMS IN OUT_C OUT_H NAME)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "embed.cmake: -D${v}= is required")
  endif()
endforeach()

file(READ "${IN}" hex HEX)
file(SHA256 "${IN}" sha)
string(SUBSTRING "${sha}" 0 32 etag)
string(LENGTH "${hex}" hexlen)
math(EXPR len "${hexlen} / 2")
# 0xAB, per byte, 16 bytes a line
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REPEAT "0x[0-9a-f][0-9a-f]," 16 line)
string(REGEX REPLACE "(${line})" "\\1\n    " bytes "${bytes}")
get_filename_component(src "${IN}" NAME)
get_filename_component(hdr "${OUT_H}" NAME)
string(TOUPPER "${NAME}_H" guard)

set(h "/* Generated from ${src} by cmake/embed.cmake at build time: do not edit. */
#ifndef ${guard}
#define ${guard}
#include <stddef.h>

extern const unsigned char ${NAME}[];   /* the file's bytes, NUL-terminated */
extern const size_t ${NAME}_len;        /* without the NUL */
extern const char ${NAME}_etag[];       /* a quoted strong ETag */

#endif
")
set(c "/* Generated from ${src} by cmake/embed.cmake at build time: do not edit. */
#include \"${hdr}\"

const unsigned char ${NAME}[] = {
    ${bytes}0x00};
const size_t ${NAME}_len = ${len};
const char ${NAME}_etag[] = \"\\\"${etag}\\\"\";
")

foreach(pair IN ITEMS "OUT_H;h" "OUT_C;c")
  list(GET pair 0 outvar)
  list(GET pair 1 textvar)
  set(out "${${outvar}}")
  set(old "")
  if(EXISTS "${out}")
    file(READ "${out}" old)
  endif()
  if(NOT old STREQUAL "${${textvar}}")
    file(WRITE "${out}" "${${textvar}}")
  endif()
endforeach()
