# Embed core/src/api/status_page.html into a C file (cmake -P; see the top-level CMakeLists.txt):
#   cmake -DIN=status_page.html -DOUT=status_page_html.c -P status_page.cmake
# defines gs_status_page_html_data (the bytes, NUL-terminated) and gs_status_page_html_size
# (without the NUL), which status.c hands to GET /status.
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" nhex)
math(EXPR size "${nhex} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){16})" "\\1\n    " bytes "${bytes}")
file(WRITE "${OUT}.tmp"
"/* Generated from core/src/api/status_page.html by status_page.cmake; do not edit. */
#include <stddef.h>

extern const unsigned char gs_status_page_html_data[];
extern const size_t gs_status_page_html_size;

const unsigned char gs_status_page_html_data[] = {
    ${bytes}0x00};
const size_t gs_status_page_html_size = ${size};
")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
