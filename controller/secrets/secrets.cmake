# pgfleet_controller_secrets: encryption of secret material at rest and checks of TLS files
# (controller/secrets/). Included from controller/CMakeLists.txt before the store, which links it.
add_library(pgfleet_controller_secrets STATIC
  ${CMAKE_CURRENT_SOURCE_DIR}/secrets/secret_box.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/secrets/tls_material.cc)
target_include_directories(pgfleet_controller_secrets PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(pgfleet_controller_secrets
  PUBLIC pgfleet_common absl::status absl::statusor absl::strings absl::str_format absl::time
  PRIVATE OpenSSL::Crypto pgfleet_warnings)
