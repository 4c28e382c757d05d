/* pid 1 of a fork-server sandbox (executor/forkserver/template.py).
 *
 * The sandbox's first process, spawned (vfork and exec: no copy of the template's large
 * address space) by the child that made the namespaces; the program's process is its sibling,
 * pid 2. It only reaps the orphans the kernel hands it, as bubblewrap's own pid 1 does, until
 * the sandbox ends: its maker kills it once the program has ended, and the pid namespace goes
 * with it. The program runs as the same uid, so this process makes itself non-dumpable (no
 * /proc/1/mem for the program) and blocks every signal (none with the default action reaches
 * a namespace's init from inside anyway).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
    sigset_t all;

    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL);
    syscall(SYS_close_range, 0U, ~0U, 0U); /* nothing of its maker's */
    for (;;) {
        while (waitpid(-1, NULL, WNOHANG) > 0) {
        }
        sigwaitinfo(&all, NULL); /* a pending SIGCHLD (blocked, so never lost) wakes it */
    }
}
