# Install rules and the exported CMake package:
#   find_package(herdguard REQUIRED)
#   target_link_libraries(app PRIVATE herdguard::herdguard)
include(CMakePackageConfigHelpers)

install(TARGETS herdguard
  EXPORT herdguardTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  PUBLIC_HEADER DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/herdguard)

install(EXPORT herdguardTargets
  NAMESPACE herdguard::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/herdguard)

configure_package_config_file(
  ${PROJECT_SOURCE_DIR}/cmake/herdguardConfig.cmake.in
  ${PROJECT_BINARY_DIR}/herdguardConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/herdguard)
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/herdguardConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES
  ${PROJECT_BINARY_DIR}/herdguardConfig.cmake
  ${PROJECT_BINARY_DIR}/herdguardConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/herdguard)
