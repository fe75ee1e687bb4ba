/* The pod sandbox's pause process, equivalent to kubernetes' build/pause/linux/pause.c:
 * it holds the pod's namespaces open, reaps orphans (it is PID 1 of the pod when the PID
 * namespace is shared) and exits 0 on SIGINT/SIGTERM. Built static by tools/node/build.sh. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_down(int signo) { (void)signo; _exit(0); }

static void on_child(int signo) {
  (void)signo;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "-v") == 0) { puts("pause (pynchy) " PAUSE_VERSION); return 0; }
  if (getpid() != 1) fputs("Warning: pause should be the first process\n", stderr);
  if (sigaction(SIGINT, &(struct sigaction){.sa_handler = on_down}, NULL) < 0) return 1;
  if (sigaction(SIGTERM, &(struct sigaction){.sa_handler = on_down}, NULL) < 0) return 2;
  if (sigaction(SIGCHLD, &(struct sigaction){.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP}, NULL) < 0) return 3;
  for (;;) pause();
}
