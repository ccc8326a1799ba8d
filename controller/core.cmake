# The controller's service code (everything but the store and main), and the binary.
# Included from controller/CMakeLists.txt after the store library is defined.
add_library(pgfleet_controller_core STATIC
  ${CMAKE_CURRENT_SOURCE_DIR}/api/control_api.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/api/fleet_api.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/api/maintenance_api.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/api/rollout_api.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/api/secrets_api.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/auth/tokens.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/config/ini_passwords.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/config/overlays.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/config/overlay_proto.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/auth/agent_identity.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/auth/token_admin.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/grpc/leader_proxy.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/grpc/services.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/registry/agent_registry.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/rollout/rollout_engine.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/rollout/connection_budget.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/leader/leadership.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/maintenance/orchestrator.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/metrics/controller_metrics.cc)
target_include_directories(pgfleet_controller_core PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(pgfleet_controller_core
  PUBLIC pgfleet_controller_store pgfleet_config pgfleet_proto pgfleet_proto_json pgfleet_common
         absl::status absl::statusor absl::strings absl::synchronization absl::time
         OpenSSL::Crypto
  PRIVATE pgfleet_warnings)

add_executable(pgfleet-controller ${CMAKE_CURRENT_SOURCE_DIR}/main.cc)
# grpc++_reflection: server reflection, so grpcurl lists and calls the services.
find_package(gRPC CONFIG REQUIRED)  # Its targets are imported per directory (proto/ has them).
target_link_libraries(pgfleet-controller PRIVATE pgfleet_controller_core gRPC::grpc++_reflection
                      pgfleet_service_notify pgfleet_warnings)

# ---- The dashboard: HTTP listener + JSON API (controller/http/) and its web files (web/) ----
target_sources(pgfleet_controller_core PRIVATE
  ${CMAKE_CURRENT_SOURCE_DIR}/http/api_router.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/http/http_server.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/http/metrics_history.cc)
target_link_libraries(pgfleet_controller_core PUBLIC PkgConfig::LIBEVENT)

# web/ is built with npm (uPlot, esbuild from the npm registry) into <build>/web/dist, where
# pgfleet-controller finds it by default. package.json and the lock are copied into the build
# dir and installed there, so several build dirs never share (or race on) one node_modules.
option(PGFLEET_BUILD_WEB "Build the web dashboard (needs node and npm)" ON)
find_program(PGFLEET_NPM npm)
find_program(PGFLEET_NODE node)
if(PGFLEET_BUILD_WEB AND PGFLEET_NPM AND PGFLEET_NODE)
  set(PGFLEET_WEB_DIR ${PROJECT_BINARY_DIR}/web)
  set(PGFLEET_WEB_SOURCE ${PROJECT_SOURCE_DIR}/web)
  add_custom_command(
    OUTPUT ${PGFLEET_WEB_DIR}/node_modules/.pgfleet-installed
    COMMAND ${CMAKE_COMMAND} -E make_directory ${PGFLEET_WEB_DIR}
    COMMAND ${CMAKE_COMMAND} -E copy_if_different ${PGFLEET_WEB_SOURCE}/package.json
            ${PGFLEET_WEB_SOURCE}/package-lock.json ${PGFLEET_WEB_DIR}/
    COMMAND ${PGFLEET_NPM} ci --no-audit --no-fund --loglevel=error
    COMMAND ${CMAKE_COMMAND} -E touch ${PGFLEET_WEB_DIR}/node_modules/.pgfleet-installed
    WORKING_DIRECTORY ${PGFLEET_WEB_DIR}
    DEPENDS ${PGFLEET_WEB_SOURCE}/package.json ${PGFLEET_WEB_SOURCE}/package-lock.json
    COMMENT "npm ci for the dashboard (web/)"
    VERBATIM)
  file(GLOB_RECURSE PGFLEET_WEB_FILES CONFIGURE_DEPENDS ${PGFLEET_WEB_SOURCE}/src/*)
  add_custom_command(
    OUTPUT ${PGFLEET_WEB_DIR}/dist/index.html
    COMMAND ${CMAKE_COMMAND} -E env NODE_PATH=${PGFLEET_WEB_DIR}/node_modules
            ${PGFLEET_NODE} ${PGFLEET_WEB_SOURCE}/build.mjs --out=${PGFLEET_WEB_DIR}/dist
            --node-modules=${PGFLEET_WEB_DIR}/node_modules
    WORKING_DIRECTORY ${PGFLEET_WEB_DIR}
    DEPENDS ${PGFLEET_WEB_DIR}/node_modules/.pgfleet-installed ${PGFLEET_WEB_FILES}
            ${PGFLEET_WEB_SOURCE}/build.mjs
    COMMENT "Bundling the dashboard into web/dist"
    VERBATIM)
  add_custom_target(pgfleet_web ALL DEPENDS ${PGFLEET_WEB_DIR}/dist/index.html)
  set(PGFLEET_WEB_NODE_MODULES ${PGFLEET_WEB_DIR}/node_modules CACHE INTERNAL "")
else()
  message(STATUS "pgfleet: node/npm not found (or PGFLEET_BUILD_WEB=OFF): no web dashboard")
endif()

# The command line (flags, PGFLEET_CONTROLLER_* variables, --config): in the library, so tests
# can parse without starting a controller.
target_sources(pgfleet_controller_core PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/controller_flags.cc)

# Start-up wiring of the secrets key into the store (the crypto itself is
# pgfleet_controller_secrets, below the store).
target_sources(pgfleet_controller_core PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/secrets/keyring_setup.cc)
