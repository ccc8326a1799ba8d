# The controller's service code (everything but the store and main), and the binary.
# Included from controller/CMakeLists.txt after the store library is defined.
add_library(pgfleet_controller_core STATIC
  ${CMAKE_CURRENT_SOURCE_DIR}/api/fleet_api.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/auth/tokens.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/grpc/services.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/registry/agent_registry.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/rollout/rollout_engine.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/maintenance/orchestrator.cc)
target_include_directories(pgfleet_controller_core PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(pgfleet_controller_core
  PUBLIC pgfleet_controller_store pgfleet_agent_config pgfleet_proto pgfleet_common
         absl::status absl::statusor absl::strings absl::synchronization absl::time
         OpenSSL::Crypto
  PRIVATE pgfleet_warnings)

add_executable(pgfleet-controller ${CMAKE_CURRENT_SOURCE_DIR}/main.cc)
target_link_libraries(pgfleet-controller PRIVATE pgfleet_controller_core pgfleet_warnings)
