# Installing and packaging: install() rules for the three programs, the dashboard, the example
# configs, the systemd units and the man pages, and CPack's Debian packages (one per component):
#   pgfleet-agent       /usr/bin/pgfleet-agent, pgfleet-agent.service, pgfleet-agent@.service,
#                       /etc/pgfleet/{agent.ini,agent.env,userlist.txt}
#   pgfleet-controller  /usr/bin/pgfleet-controller, pgfleet-controller.service,
#                       /usr/share/pgfleet/{web,monitoring}, /etc/pgfleet/controller.env
#   fleetctl            /usr/bin/fleetctl
# scripts/package.sh configures a release build with -DCMAKE_INSTALL_PREFIX=/usr and runs cpack.
# The migrations are embedded in the controller (controller/store/embed_migrations.cmake): not
# installed.
include(GNUInstallDirs)

# The version the binaries print (--version) is the project's, the packages' too.
set_source_files_properties(${PROJECT_SOURCE_DIR}/agent/agent_flags.cc
  DIRECTORY ${PROJECT_SOURCE_DIR}/agent PROPERTIES COMPILE_DEFINITIONS
  PGFLEET_VERSION="${PROJECT_VERSION}")
set_source_files_properties(${PROJECT_SOURCE_DIR}/controller/controller_flags.cc
  DIRECTORY ${PROJECT_SOURCE_DIR}/controller PROPERTIES COMPILE_DEFINITIONS
  PGFLEET_VERSION="${PROJECT_VERSION}")
set_source_files_properties(${PROJECT_SOURCE_DIR}/cli/main.cc
  DIRECTORY ${PROJECT_SOURCE_DIR}/cli PROPERTIES COMPILE_DEFINITIONS
  PGFLEET_VERSION="${PROJECT_VERSION}")

# With the /usr prefix GNUInstallDirs gives /etc and /var; with /usr/local, /usr/local/etc...
set(PGFLEET_BINDIR ${CMAKE_INSTALL_FULL_BINDIR})
set(PGFLEET_SYSCONFDIR ${CMAKE_INSTALL_FULL_SYSCONFDIR}/pgfleet)
set(PGFLEET_STATEDIR ${CMAKE_INSTALL_FULL_LOCALSTATEDIR}/lib/pgfleet)
set(PGFLEET_DATADIR ${CMAKE_INSTALL_DATADIR}/pgfleet)
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(PGFLEET_DEFAULT_UNIT_DIR /lib/systemd/system)  # Debian 12's place for packaged units.
else()
  set(PGFLEET_DEFAULT_UNIT_DIR ${CMAKE_INSTALL_PREFIX}/lib/systemd/system)
endif()
set(PGFLEET_SYSTEMD_UNIT_DIR ${PGFLEET_DEFAULT_UNIT_DIR})

# ---- Programs ----------------------------------------------------------------------------------
install(TARGETS pgfleet-agent RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT pgfleet-agent)
install(TARGETS pgfleet-controller RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        COMPONENT pgfleet-controller)
install(TARGETS fleetctl RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT fleetctl)

# The dashboard, where the controller looks by default: <binary dir>/../share/pgfleet/web.
if(TARGET pgfleet_web)
  install(DIRECTORY ${PROJECT_BINARY_DIR}/web/dist/ DESTINATION ${PGFLEET_DATADIR}/web
          COMPONENT pgfleet-controller)
endif()
# Grafana dashboards and Prometheus alert rules, if the tree has them (OPTIONAL: a missing or
# empty directory installs nothing).
install(DIRECTORY ${PROJECT_SOURCE_DIR}/packaging/monitoring/ DESTINATION
        ${PGFLEET_DATADIR}/monitoring COMPONENT pgfleet-controller OPTIONAL)

# ---- Configs (conffiles) and the state dir ------------------------------------------------------
set(PGFLEET_AGENT_CONFFILES agent.ini agent.env userlist.txt)
set(PGFLEET_CONTROLLER_CONFFILES controller.env)
foreach(file ${PGFLEET_AGENT_CONFFILES})
  install(FILES ${PROJECT_SOURCE_DIR}/packaging/etc/${file} DESTINATION ${PGFLEET_SYSCONFDIR}
          COMPONENT pgfleet-agent)
endforeach()
foreach(file ${PGFLEET_CONTROLLER_CONFFILES})
  install(FILES ${PROJECT_SOURCE_DIR}/packaging/etc/${file} DESTINATION ${PGFLEET_SYSCONFDIR}
          COMPONENT pgfleet-controller)
endforeach()
# Owned by the pgfleet user (postinst); the units' StateDirectory= make agent/, controller/...
install(DIRECTORY DESTINATION ${PGFLEET_STATEDIR} COMPONENT pgfleet-agent)
install(DIRECTORY DESTINATION ${PGFLEET_STATEDIR} COMPONENT pgfleet-controller)

# ---- systemd units ----------------------------------------------------------------------------
set(PGFLEET_UNITS_DIR ${PROJECT_BINARY_DIR}/packaging/systemd)
foreach(unit pgfleet-agent.service pgfleet-agent@.service pgfleet-controller.service)
  configure_file(${PROJECT_SOURCE_DIR}/packaging/systemd/${unit}.in ${PGFLEET_UNITS_DIR}/${unit}
                 @ONLY)
endforeach()
install(FILES ${PGFLEET_UNITS_DIR}/pgfleet-agent.service ${PGFLEET_UNITS_DIR}/pgfleet-agent@.service
        DESTINATION ${PGFLEET_SYSTEMD_UNIT_DIR} COMPONENT pgfleet-agent)
install(FILES ${PGFLEET_UNITS_DIR}/pgfleet-controller.service
        DESTINATION ${PGFLEET_SYSTEMD_UNIT_DIR} COMPONENT pgfleet-controller)

# ---- Man pages: the programs' from their --help at build time, pgfleet.ini(5) written ---------
set(PGFLEET_MAN_DIR ${PROJECT_BINARY_DIR}/packaging/man)
set(PGFLEET_MAN_PAGES)
function(pgfleet_man_page target name section summary)
  set(source_dir ${PROJECT_SOURCE_DIR}/packaging/man)
  set(page ${PGFLEET_MAN_DIR}/${name}.${section})
  add_custom_command(
    OUTPUT ${page}.gz
    COMMAND ${CMAKE_COMMAND} -DPROGRAM=$<TARGET_FILE:${target}> -DNAME=${name}
            -DSECTION=${section} -DSUMMARY=${summary} -DVERSION=${PROJECT_VERSION}
            -DEXTRA=${source_dir}/${name}.${section}.extra -DOUTPUT=${page}
            -P ${source_dir}/help2man.cmake
    COMMAND gzip -9nf ${page}
    DEPENDS ${target} ${source_dir}/help2man.cmake ${source_dir}/${name}.${section}.extra
    COMMENT "Man page ${name}(${section}) from ${name} --help"
    VERBATIM)
  set(PGFLEET_MAN_PAGES ${PGFLEET_MAN_PAGES} ${page}.gz PARENT_SCOPE)
endfunction()
pgfleet_man_page(pgfleet-agent pgfleet-agent 8 "PgBouncer-compatible PostgreSQL connection pooler")
pgfleet_man_page(pgfleet-controller pgfleet-controller 8 "control plane of a pgfleet-agent fleet")
pgfleet_man_page(fleetctl fleetctl 1 "the operator's command line for pgfleet-controller")
add_custom_command(
  OUTPUT ${PGFLEET_MAN_DIR}/pgfleet.ini.5.gz
  COMMAND ${CMAKE_COMMAND} -E make_directory ${PGFLEET_MAN_DIR}
  COMMAND sh -c "gzip -9nc '${PROJECT_SOURCE_DIR}/packaging/man/pgfleet.ini.5' > '${PGFLEET_MAN_DIR}/pgfleet.ini.5.gz'"
  DEPENDS ${PROJECT_SOURCE_DIR}/packaging/man/pgfleet.ini.5
  VERBATIM)
add_custom_target(pgfleet_man_pages ALL DEPENDS ${PGFLEET_MAN_PAGES} ${PGFLEET_MAN_DIR}/pgfleet.ini.5.gz)
install(FILES ${PGFLEET_MAN_DIR}/pgfleet-agent.8.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man8
        COMPONENT pgfleet-agent)
install(FILES ${PGFLEET_MAN_DIR}/pgfleet.ini.5.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man5
        COMPONENT pgfleet-agent)
install(FILES ${PGFLEET_MAN_DIR}/pgfleet-controller.8.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man8
        COMPONENT pgfleet-controller)
install(FILES ${PGFLEET_MAN_DIR}/fleetctl.1.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man1
        COMPONENT fleetctl)

# ---- CPack: three .deb packages -------------------------------------------------------------
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME pgfleet)
set(CPACK_PACKAGE_VENDOR "pgfleet")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "pgfleet maintainers <pgfleet@localhost>")
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_COMPONENTS_ALL pgfleet-agent pgfleet-controller fleetctl)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # <name>_<version>-<release>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_SECTION database)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://github.com/pgfleet/pgfleet")
# Depends from the binaries' shared libraries (dpkg-shlibdeps, from dpkg-dev).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_ENABLE_COMPONENT_DEPENDS OFF)
set(CPACK_STRIP_FILES ON)  # The debug info stays in the build tree.
set(CPACK_DEBIAN_COMPRESSION_TYPE gzip)  # Faster than xz for CI; the packages are small.

set(CPACK_DEBIAN_PGFLEET-AGENT_PACKAGE_NAME pgfleet-agent)
set(CPACK_DEBIAN_PGFLEET-AGENT_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PGFLEET-AGENT_DESCRIPTION
    "PgBouncer-compatible PostgreSQL connection pooler
pgfleet-agent reads PgBouncer's pgbouncer.ini and auth_file unchanged and pools
client connections to PostgreSQL (session, transaction and statement modes),
with an admin console, Prometheus metrics and zero-downtime restarts. It may
keep a stream to pgfleet-controller, which pushes its configuration.
.
Ships pgfleet-agent.service and pgfleet-agent@.service (several agents per
host), /etc/pgfleet/agent.ini and the pgfleet system user.")
set(CPACK_DEBIAN_PGFLEET-CONTROLLER_PACKAGE_NAME pgfleet-controller)
set(CPACK_DEBIAN_PGFLEET-CONTROLLER_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PGFLEET-CONTROLLER_DESCRIPTION
    "control plane for a fleet of pgfleet-agent poolers
pgfleet-controller stores config versions in SQLite, keeps a stream to every
pgfleet-agent, rolls configs out in waves, runs maintenance windows, and
serves the operators' gRPC API, a JSON API and a web dashboard.
.
Ships pgfleet-controller.service, the dashboard in /usr/share/pgfleet/web and
the pgfleet system user.")
set(CPACK_DEBIAN_FLEETCTL_PACKAGE_NAME fleetctl)
set(CPACK_DEBIAN_FLEETCTL_DESCRIPTION
    "command line for pgfleet-controller
fleetctl lists agents, pushes and rolls out configs, pauses and resumes
databases across a pgfleet fleet, and manages tokens and secrets, through
pgfleet-controller's API.")

# Maintainer scripts (the pgfleet user, the state dir) and the conffiles under /etc.
set(PGFLEET_DEBIAN_DIR ${PROJECT_BINARY_DIR}/packaging/debian)
foreach(component agent controller)
  string(TOUPPER ${component} upper)
  set(dir ${PGFLEET_DEBIAN_DIR}/pgfleet-${component})
  file(MAKE_DIRECTORY ${dir})
  set(conffiles "")
  foreach(file ${PGFLEET_${upper}_CONFFILES})
    string(APPEND conffiles "${PGFLEET_SYSCONFDIR}/${file}\n")
  endforeach()
  file(WRITE ${dir}/conffiles "${conffiles}")
  foreach(script postinst prerm postrm)
    configure_file(${PROJECT_SOURCE_DIR}/packaging/debian/${script} ${dir}/${script} COPYONLY
                   FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
                                    WORLD_READ WORLD_EXECUTE)
  endforeach()
  set(CPACK_DEBIAN_PGFLEET-${upper}_PACKAGE_CONTROL_EXTRA
      ${dir}/conffiles ${dir}/postinst ${dir}/prerm ${dir}/postrm)
  set(CPACK_DEBIAN_PGFLEET-${upper}_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
endforeach()

include(CPack)
