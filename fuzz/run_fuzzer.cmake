# ctest driver for one fuzzer: fresh scratch corpus from the seeds, bounded run.
# Inputs: FUZZER, SEEDS, WORK, SECONDS, RSS_MB.
foreach(v FUZZER SEEDS WORK SECONDS RSS_MB)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "run_fuzzer.cmake: ${v} not set")
  endif()
endforeach()

# Fresh each run so results do not depend on what earlier runs found.
file(REMOVE_RECURSE ${WORK}/corpus)
file(MAKE_DIRECTORY ${WORK}/corpus ${WORK}/artifacts)
if(IS_DIRECTORY ${SEEDS})
  file(GLOB seeds LIST_DIRECTORIES false ${SEEDS}/*)
  if(seeds)
    file(COPY ${seeds} DESTINATION ${WORK}/corpus)
  endif()
endif()

execute_process(
  COMMAND ${FUZZER} ${WORK}/corpus
    -max_total_time=${SECONDS}
    -rss_limit_mb=${RSS_MB}
    -timeout=25
    -artifact_prefix=${WORK}/artifacts/
    -print_final_stats=1
  WORKING_DIRECTORY ${WORK}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${FUZZER} failed (${rc}); reproducer in ${WORK}/artifacts/")
endif()
