# Writes a man page from a program's --help text, so the page never disagrees with the binary:
#   cmake -DPROGRAM=<binary> -DNAME=pgfleet-agent -DSECTION=8 -DSUMMARY="..." -DVERSION=0.1.0
#         -DEXTRA=<troff file appended, optional> -DOUTPUT=<file> -P help2man.cmake
execute_process(COMMAND ${PROGRAM} --help OUTPUT_VARIABLE help RESULT_VARIABLE rc
                ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${PROGRAM} --help failed (${rc}): ${err}")
endif()
# troff: backslashes doubled, and a line starting with . or ' would be a request.
string(REPLACE "\\" "\\e" help "${help}")
string(REGEX REPLACE "(^|\n)([.'])" "\\1\\\\&\\2" help "${help}")
string(TOUPPER "${NAME}" upper)
if(SECTION STREQUAL "1")
  set(manual "User Commands")
else()
  set(manual "System Administration")
endif()
set(page ".\\\" Generated from `${NAME} --help` by packaging/man/help2man.cmake; edit the --help text.\n")
string(APPEND page ".TH ${upper} ${SECTION} \"\" \"pgfleet ${VERSION}\" \"${manual}\"\n")
string(APPEND page ".SH NAME\n${NAME} \\- ${SUMMARY}\n")
string(APPEND page ".SH DESCRIPTION\nThe text below is what \\fB${NAME} --help\\fR prints.\n")
string(APPEND page ".PP\n.nf\n${help}.fi\n")
if(EXTRA AND EXISTS "${EXTRA}")
  file(READ "${EXTRA}" extra)
  string(APPEND page "${extra}")
endif()
file(WRITE "${OUTPUT}" "${page}")
