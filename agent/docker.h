/*
 * docker.h - container builds: a build whose dockerBuildInfo is set runs
 * its worker in a container of the Docker engine (or Podman), driven
 * through the runtime's command-line tool as GoAgent HEAD does (bk-ci
 * src/agent/agent/src/pkg/job/build_docker.go, docker_runtime.go,
 * pkg/dockercli/dockercli.go, pkg/job_docker/job_docker.go).
 *
 * Every runtime command is an argv (never a shell) run as a watched child of
 * the event loop with a deadline, in the install directory, with the
 * agent's environment. The container carries labels naming this install
 * and the build, so a restarted agent finds it again (docs/docker.md).
 */
#ifndef DOCKER_H
#define DOCKER_H

#include <stddef.h>
#include <cjson/cJSON.h>

struct build;

/* workerBuildFinish error codes of container builds (bk-ci
 * src/agent/agent/src/pkg/constant/errorcode.go). */
#define ERR_DOCKER_INIT_DOWNLOAD	2128047
#define ERR_DOCKER_INIT_STAT		2128048
#define ERR_DOCKER_PULL			2128051
#define ERR_DOCKER_MKDIR		2128052
#define ERR_DOCKER_CREATE		2128054
#define ERR_DOCKER_START		2128055
#define ERR_DOCKER_RUN			2128056
#define ERR_DOCKER_CHMOD		2128058
#define ERR_DOCKER_CREDENTIAL		2128059
#define ERR_DOCKER_OPTIONS		2128060

/* Container labels: which install made it, and for which build. */
#define DOCKER_LABEL_OWNER	"com.tencent.devops.agent.owner"
#define DOCKER_LABEL_BUILD	"com.tencent.devops.agent.build"

/**
 * Check a dockerBuildInfo object (bk-ci DA/pojo/thirdpartyagent/
 * ThirdPartyBuildDockerInfo.kt) before any of it is used: agentId,
 * secretKey and image strings; image (without http(s)://) at most 512 bytes
 * of [A-Za-z0-9._/:@-], not starting with '-'; credential null or an object
 * of nullable strings; options null or an object whose volumes, mounts and
 * network are arrays of non-blank strings, gpus and user non-blank strings,
 * privileged a bool (each value without control characters and not
 * starting with '-'); imagePullPolicy null or a string. workspace: the
 * build's workspace ("" or "__NO_MOUNT__" or an absolute path without ',',
 * '=', ".." components or control characters). Returns 0, or -1 with the
 * reason in err (errlen bytes). No side effects (unit-tested).
 */
int docker_info_check(const cJSON *dbi, const char *workspace, char *err,
    size_t errlen);

/**
 * The registry host of an image for `login` (GoAgent HEAD rules): the
 * first '/'-separated part of image (without http(s)://) when the image
 * has a '/' and that part contains '.' or ':' or is "localhost"; else ""
 * (Docker Hub). New string, caller frees.
 */
char *docker_registry_of(const char *image);

/**
 * Start the container of a claimed, journaled build b (dockerBuildInfo
 * set): on success b becomes RUNNING with b->container set and journaled
 * before the container is created; its end is reported through
 * build_finish. Any failure finishes b as failed with the cause.
 */
void docker_launch(struct build *b);

/**
 * Re-adopt a journaled RUNNING container build after a restart: the
 * container is inspected; running or exited -> waited for and reported
 * once; created but never started, or gone -> removed and failed.
 */
void docker_recover(struct build *b);

/** Free what a build holds of this module (steps in flight are killed). */
void docker_build_free(struct build *b);

/**
 * Start the engine probe (`<rt> version`, every 60 s, 10 s deadline) and
 * the sweep of containers of gone builds (at start and every 10 min):
 * only containers labelled with this install's owner label whose build is
 * not running in the table are removed; others are never touched.
 */
void docker_start(void);
/**
 * The agent exits: SIGKILL the runtime commands of no build (engine probe,
 * sweep), so none outlives the deadline the agent enforced; the commands of
 * running container builds go on (the next agent re-adopts them).
 */
void docker_stop(void);

/** 1 when the last engine probe succeeded (container builds may be claimed). */
int docker_engine_up(void);

/** Container builds that count against devops.docker.parallel.task.count. */
int docker_active_count(void);

/** Heartbeat dockerTaskList: array of {projectId, buildId, vmSeqId}; new. */
cJSON *docker_task_list(void);

#endif
