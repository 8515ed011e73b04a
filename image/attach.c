/*
 * agentenv-attach: the in-container half of `agentenv attach`.
 *
 * It runs in a sidecar container that shares the target's pid namespace (so the target's
 * PID 1 is our /proc/1) and has our /nix, the environment's home and our static tools
 * mounted. It builds a private view for CMD:
 *
 *   1. clone our /nix, home and tools (open_tree, still in the sidecar's mount namespace);
 *   2. join the target's ipc, network, uts and mount namespaces, then unshare a private
 *      copy of the last (MS_PRIVATE: nothing we mount propagates back to the target);
 *   3. a detached tmpfs skeleton gets a clone of each top-level entry of the target's
 *      root (directories and files as recursive bind clones, symlinks as symlinks), our
 *      /nix (or, when the target has its own /nix, a copy of its entries with /nix/store a
 *      read-only overlay of both stores) and GRAFT/{bin,home,tmp};
 *   4. the skeleton is attached over the copy's root and chrooted into, so mount, df and
 *      /proc/self/mountinfo show the target's filesystems;
 *   5. CMD runs under us as a subreaper: we forward signals, and when CMD ends we kill and
 *      reap whatever it left, so the target never inherits a process of ours.
 *
 * Nothing is created in the target's filesystems: every directory we make is in our
 * tmpfs. Names and links read from the target are used only inside the view (after
 * setns our root is the target's root, so no path of its can lead out to the sidecar).
 * Single-threaded on purpose: setns(CLONE_NEWNS) refuses a multi-threaded caller.
 *
 * Usage: agentenv-attach [--pid N] [--nix DIR] [--home DIR] [--tools DIR] [--announce 1] [--] CMD...
 * Exit: CMD's code (128+N when killed by signal N); 125 with one line on stderr when
 * the view cannot be built.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef OPEN_TREE_CLOEXEC
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef FSOPEN_CLOEXEC
#define FSOPEN_CLOEXEC 0x00000001
#endif
#ifndef FSMOUNT_CLOEXEC
#define FSMOUNT_CLOEXEC 0x00000001
#endif
#ifndef FSCONFIG_SET_STRING
#define FSCONFIG_SET_STRING 1
#define FSCONFIG_CMD_CREATE 6
#endif
#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428
#define SYS_move_mount 429
#define SYS_fsopen 430
#define SYS_fsconfig 431
#define SYS_fsmount 432
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif

struct attr {
  unsigned long long set, clr, propagation, userns_fd;
};

static int open_tree_(int dfd, const char *path, unsigned flags) { return syscall(SYS_open_tree, dfd, path, flags); }
static int move_mount_(int fd, const char *from, int tfd, const char *to, unsigned flags) {
  return syscall(SYS_move_mount, fd, from, tfd, to, flags);
}
static int fsopen_(const char *fs, unsigned flags) { return syscall(SYS_fsopen, fs, flags); }
static int fsconfig_(int fd, unsigned cmd, const char *key, const void *value, int aux) {
  return syscall(SYS_fsconfig, fd, cmd, key, value, aux);
}
static int fsmount_(int fd, unsigned flags, unsigned attrs) { return syscall(SYS_fsmount, fd, flags, attrs); }
static int mount_setattr_(int dfd, const char *path, unsigned flags, struct attr *attr) {
  return syscall(SYS_mount_setattr, dfd, path, flags, attr, sizeof *attr);
}

/* One line on stderr, then exit 125: the caller (agentenv) shows it as it is. */
static void die(const char *fmt, ...) {
  int saved = errno;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const char *hint = "";
  if (saved == EPERM || saved == EACCES)
    hint = " (the sidecar lacks a capability: it needs CAP_SYS_ADMIN, CAP_SYS_PTRACE and CAP_SYS_CHROOT, and a seccomp/AppArmor profile that allows mount syscalls)";
  else if (saved == ENOSYS)
    hint = " (this kernel or the seccomp profile lacks open_tree/move_mount/fsopen: Linux 5.2 or later is needed)";
  if (saved)
    fprintf(stderr, "agentenv attach: %s: %s%s\n", msg, strerror(saved), hint);
  else
    fprintf(stderr, "agentenv attach: %s\n", msg);
  exit(125);
}

/* A recursive, detached clone of PATH (relative to DFD), never following a final symlink. */
static int clone_tree(int dfd, const char *path, int readonly) {
  int fd = open_tree_(dfd, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_SYMLINK_NOFOLLOW);
  if (fd < 0) return -1;
  if (readonly) {
    struct attr attr = {.set = MOUNT_ATTR_RDONLY};
    if (mount_setattr_(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr) < 0) {
      close(fd);
      return -1;
    }
  }
  return fd;
}

/* Attach mount FD at NAME under directory DIRFD, making NAME there first (in our tmpfs). */
static void graft(int fd, int dirfd, const char *name, int is_dir, const char *what) {
  if (is_dir) {
    if (mkdirat(dirfd, name, 0755) < 0 && errno != EEXIST) die("cannot make the mount point for %s", what);
  } else {
    int f = openat(dirfd, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (f < 0) die("cannot make the mount point for %s", what);
    close(f);
  }
  if (move_mount_(fd, "", dirfd, name, MOVE_MOUNT_F_EMPTY_PATH) < 0) die("cannot mount %s in the view", what);
  close(fd);
}

/* A top-level name is a single path component of sane length. */
static int plain_name(const char *name) {
  return name[0] && strcmp(name, ".") && strcmp(name, "..") && !strchr(name, '/') && strlen(name) < 256;
}

/*
 * Mirror entry NAME of directory SRC (an fd in the target's tree) into DST (a directory
 * of our tmpfs): a directory or file as a recursive bind clone, a symlink copied as a
 * symlink (its text is only ever resolved in the view, under our root).
 */
static void mirror_one(int src, int dst, const char *where, const char *name) {
  struct stat st;
  if (fstatat(src, name, &st, AT_SYMLINK_NOFOLLOW) < 0) return; /* gone meanwhile */
  char what[600];
  snprintf(what, sizeof what, "%s%s", where, name);
  if (S_ISLNK(st.st_mode)) {
    char link[4096];
    ssize_t n = readlinkat(src, name, link, sizeof link - 1);
    if (n < 0) return;
    link[n] = 0;
    if (symlinkat(link, dst, name) < 0) die("cannot copy the link %s", what);
    return;
  }
  int clone = clone_tree(src, name, 0);
  if (clone < 0) die("cannot clone the target's %s", what);
  graft(clone, dst, name, S_ISDIR(st.st_mode), what);
}

/* Every entry of SRC but SKIP, as mirror_one does it. */
static void mirror(int src, int dst, const char *where, const char *skip) {
  int fd = dup(src);
  if (fd < 0) die("dup");
  DIR *dir = fdopendir(fd);
  if (!dir) die("cannot list %s of the target", where);
  struct dirent *entry;
  while ((entry = readdir(dir))) {
    const char *name = entry->d_name;
    if (plain_name(name) && !(skip && !strcmp(name, skip))) mirror_one(src, dst, where, name);
  }
  closedir(dir);
}

/* The target's PATH from its PID 1 (hostile input: only absolute, printable components are kept). */
static void target_path(int pid, char *out, size_t size) {
  char file[64], buf[8192];
  snprintf(file, sizeof file, "/proc/%d/environ", pid);
  out[0] = 0;
  int fd = open(file, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return;
  buf[n] = 0;
  for (char *p = buf; p < buf + n; p += strlen(p) + 1) {
    if (strncmp(p, "PATH=", 5)) continue;
    char *value = p + 5, *save = NULL;
    for (char *part = strtok_r(value, ":", &save); part; part = strtok_r(NULL, ":", &save)) {
      int ok = part[0] == '/' && strlen(part) < 256;
      for (char *c = part; ok && *c; c++) ok = *c > ' ' && *c < 127;
      if (!ok || strlen(out) + strlen(part) + 2 > size) continue;
      if (out[0]) strcat(out, ":");
      strcat(out, part);
    }
    return;
  }
}

/* The target's PID 1's working directory as text (resolved later, inside the view). */
static void target_cwd(int pid, char *out, size_t size) {
  char file[64];
  snprintf(file, sizeof file, "/proc/%d/cwd", pid);
  ssize_t n = readlink(file, out, size - 1);
  out[n > 0 ? n : 0] = 0;
  if (out[0] != '/' || strstr(out, "/..") || strstr(out, " (deleted)")) strcpy(out, "/");
}

static pid_t child = -1;
static volatile sig_atomic_t forward_sig = 0;

static void on_signal(int sig) {
  if (child > 0) kill(child, sig);
  forward_sig = sig;
}

/* Kill and reap everything left under us (we are its subreaper) until nothing is. */
static void end_descendants(void) {
  for (int round = 0; round < 100; round++) {
    int found = 0;
    DIR *proc = opendir("/proc");
    if (!proc) return;
    struct dirent *entry;
    pid_t self = getpid();
    while ((entry = readdir(proc))) {
      char file[300], buf[512];
      if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
      snprintf(file, sizeof file, "/proc/%s/stat", entry->d_name);
      int fd = open(file, O_RDONLY | O_CLOEXEC);
      if (fd < 0) continue;
      ssize_t n = read(fd, buf, sizeof buf - 1);
      close(fd);
      if (n <= 0) continue;
      buf[n] = 0;
      char *end = strrchr(buf, ')'); /* comm may hold spaces and parentheses */
      int ppid;
      if (!end || sscanf(end + 1, " %*c %d", &ppid) != 1 || ppid != self) continue;
      kill(atoi(entry->d_name), SIGKILL);
      found = 1;
    }
    closedir(proc);
    while (waitpid(-1, NULL, WNOHANG) > 0) found = 1;
    if (!found) return;
    usleep(2000);
  }
}

int main(int argc, char **argv) {
  int pid = 1, announce = 0;
  const char *nix = "/nix", *home = "/root", *tools = "/usr/local/lib/agentenv/attach/bin";
  int i = 1;
  for (; i < argc; i++) {
    if (!strcmp(argv[i], "--")) { i++; break; }
    if (i + 1 >= argc) break;
    if (!strcmp(argv[i], "--pid")) pid = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--nix")) nix = argv[++i];
    else if (!strcmp(argv[i], "--home")) home = argv[++i];
    else if (!strcmp(argv[i], "--tools")) tools = argv[++i];
    else if (!strcmp(argv[i], "--announce")) announce = argv[++i][0] == '1';
    else break;
  }
  char **cmd = argv + i;
  if (pid < 1) die("bad --pid");

  /* our /proc/1 is the target's PID 1 only if the target has a PID namespace of its own */
  struct stat pidns;
  if (stat("/proc/self/ns/pid", &pidns) == 0 && pidns.st_ino == 0xEFFFFFFCu) {
    errno = 0;
    die("the target shares the host's PID namespace (--pid host): attach would see the host, not the container");
  }

  /* 1. our parts, cloned while they are still reachable */
  int nix_fd = access(nix, F_OK) == 0 ? clone_tree(AT_FDCWD, nix, 1) : -2;
  if (nix_fd == -1) die("cannot clone our store %s", nix);
  int home_fd = clone_tree(AT_FDCWD, home, 0);
  if (home_fd < 0) die("cannot clone the home %s", home);
  int tools_fd = clone_tree(AT_FDCWD, tools, 1);
  if (tools_fd < 0) die("cannot clone our tools %s", tools);
  /* our terminal is a pty of the sidecar's devpts: without it in the view, ttyname() fails */
  int pts_fd = isatty(0) ? clone_tree(AT_FDCWD, "/dev/pts", 0) : -1;

  /*
   * 2. the target's namespaces, and what we read of its PID 1 first. Only the pid
   * namespace is shared by the engine: network, ipc and uts are joined here, so the
   * engine never sets the sidecar up in the target's network (Podman would rewrite the
   * target's /etc/hosts for it) and the docker CLI's refusal of --uts container: is moot.
   */
  static const struct { const char *name; int type; } joined[] = {
      {"ipc", CLONE_NEWIPC}, {"net", CLONE_NEWNET}, {"uts", CLONE_NEWUTS}, {"mnt", CLONE_NEWNS}};
  int ns_fd[4];
  char ns[64], path[4096], cwd[4096];
  for (int k = 0; k < 4; k++) {
    snprintf(ns, sizeof ns, "/proc/%d/ns/%s", pid, joined[k].name);
    ns_fd[k] = open(ns, O_RDONLY | O_CLOEXEC);
    if (ns_fd[k] < 0) die("cannot open the target's %s namespace (%s)", joined[k].name, ns);
  }
  target_path(pid, path, sizeof path);
  target_cwd(pid, cwd, sizeof cwd);
  for (int k = 0; k < 4; k++) {
    if (setns(ns_fd[k], joined[k].type) < 0) die("cannot join the target's %s namespace", joined[k].name);
    close(ns_fd[k]);
  }
  if (unshare(CLONE_NEWNS) < 0) die("cannot make a private mount namespace");
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) die("cannot make the mounts private");

  /* 3. the skeleton: a tmpfs of ours holding the target's root entries and our grafts */
  int fs = fsopen_("tmpfs", FSOPEN_CLOEXEC);
  if (fs < 0) die("fsopen tmpfs");
  if (fsconfig_(fs, FSCONFIG_SET_STRING, "size", "16m", 0) < 0 || fsconfig_(fs, FSCONFIG_SET_STRING, "mode", "0755", 0) < 0 ||
      fsconfig_(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
    die("cannot create the view's tmpfs");
  int skel = fsmount_(fs, FSMOUNT_CLOEXEC, 0);
  if (skel < 0) die("fsmount tmpfs");
  close(fs);
  int root = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (root < 0) die("cannot open the target's root");
  /* attached at once (over the copy's root, still reachable through ROOT): move_mount
     only mounts onto a tree in our own namespace */
  if (move_mount_(skel, "", AT_FDCWD, "/", MOVE_MOUNT_F_EMPTY_PATH) < 0) die("cannot attach the view");

  /* GRAFT: the first of .agentenv, .agentenv-1… the target does not have */
  char graft_name[64] = ".agentenv";
  for (int n = 1; faccessat(root, graft_name, F_OK, AT_SYMLINK_NOFOLLOW) == 0 && n < 100; n++)
    snprintf(graft_name, sizeof graft_name, ".agentenv-%d", n);
  mirror(root, skel, "/", "nix");
  if (mkdirat(skel, graft_name, 0755) < 0) die("cannot make /%s", graft_name);
  int graft_dir = openat(skel, graft_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (graft_dir < 0) die("cannot open /%s", graft_name);
  graft(tools_fd, graft_dir, "bin", 1, "our tools");
  graft(home_fd, graft_dir, "home", 1, "the home");
  if (mkdirat(graft_dir, "tmp", 01777) < 0 || fchmodat(graft_dir, "tmp", 01777, 0) < 0) die("cannot make /%s/tmp", graft_name);

  /* /nix: ours when the target has none; else its entries, /nix/store both stores (below) */
  struct stat nix_st;
  int stage = 0; /* 1: our store joins at /nix/store after the chroot; 2: over the target's */
  if (fstatat(root, "nix", &nix_st, AT_SYMLINK_NOFOLLOW) < 0) {
    if (nix_fd >= 0) graft(nix_fd, skel, "nix", 1, "our /nix");
  } else if (!S_ISDIR(nix_st.st_mode)) {
    mirror_one(root, skel, "/", "nix"); /* a /nix that is no directory: theirs as it is */
    if (nix_fd >= 0) close(nix_fd);
  } else {
    int their_nix = openat(root, "nix", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (their_nix < 0) die("cannot open the target's /nix");
    if (mkdirat(skel, "nix", 0755) < 0) die("cannot make /nix in the view");
    int view_nix = openat(skel, "nix", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (view_nix < 0) die("cannot open /nix in the view");
    struct stat store_st;
    int their_store = fstatat(their_nix, "store", &store_st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(store_st.st_mode);
    mirror(their_nix, view_nix, "/nix/", nix_fd >= 0 ? "store" : NULL);
    if (nix_fd >= 0) {
      /* staged where the mount after the chroot finds them, then hidden */
      if (their_store) graft(clone_tree(their_nix, "store", 1), graft_dir, ".their-store", 1, "the target's /nix/store");
      graft(nix_fd, graft_dir, ".our-nix", 1, "our /nix");
      if (mkdirat(view_nix, "store", 0755) < 0) die("cannot make /nix/store in the view");
      stage = their_store ? 2 : 1;
    }
    close(view_nix);
    close(their_nix);
  }
  close(graft_dir);
  close(root);
  /* over the target's /dev/pts in our copy only (its own ptys are then not in the view) */
  if (pts_fd >= 0) {
    if (move_mount_(pts_fd, "", skel, "dev/pts", MOVE_MOUNT_F_EMPTY_PATH) < 0) { /* a target with no /dev/pts: tty names stay unknown */ }
    close(pts_fd);
  }

  /* 4. into the view: chroot into the attached skeleton, so mountinfo shows its mounts */
  if (fchdir(skel) < 0 || chroot(".") < 0 || chdir("/") < 0) die("cannot enter the view");
  close(skel);
  if (stage) {
    char ours[128], theirs[128], opts[300];
    snprintf(ours, sizeof ours, "/%s/.our-nix", graft_name);
    snprintf(theirs, sizeof theirs, "/%s/.their-store", graft_name);
    if (stage == 2) {
      /* theirs on top: every path the target uses reads exactly as it does for the target */
      snprintf(opts, sizeof opts, "lowerdir=%s:%s/store", theirs, ours);
      if (mount("overlay", "/nix/store", "overlay", MS_RDONLY, opts) < 0) die("cannot overlay our /nix/store on the target's");
      if (umount2(theirs, MNT_DETACH) < 0) die("cannot hide the target's staged store");
    } else {
      snprintf(opts, sizeof opts, "%s/store", ours);
      if (mount(opts, "/nix/store", NULL, MS_BIND | MS_REC, NULL) < 0) die("cannot mount our /nix/store");
    }
    if (umount2(ours, MNT_DETACH) < 0) die("cannot hide our staged store");
    char dir[140];
    snprintf(dir, sizeof dir, "/%s", graft_name);
    int g = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (g >= 0) {
      unlinkat(g, ".our-nix", AT_REMOVEDIR);
      unlinkat(g, ".their-store", AT_REMOVEDIR);
      close(g);
    }
  }
  if (chdir(cwd) < 0 && chdir("/") < 0) die("cannot enter /");

  /* 5. CMD, with our tools after the target's own */
  char env_home[300], env_path[8192], env_tmp[300], env_bin[300], env_hist[400], env_graft[300];
  snprintf(env_home, sizeof env_home, "HOME=/%s/home", graft_name);
  snprintf(env_bin, sizeof env_bin, "/%s/bin", graft_name);
  snprintf(env_path, sizeof env_path, "PATH=/%s/home/.local/bin:/%s/home/.local/state/agentenv/profile/bin%s%s:%s", graft_name, graft_name,
           path[0] ? ":" : "", path, env_bin);
  snprintf(env_tmp, sizeof env_tmp, "TMPDIR=/%s/tmp", graft_name);
  snprintf(env_hist, sizeof env_hist, "HISTFILE=/%s/home/.local/state/agentenv/attach_history", graft_name);
  snprintf(env_graft, sizeof env_graft, "AGENTENV_ATTACH=/%s", graft_name);
  const char *term = getenv("TERM");
  char env_term[128];
  snprintf(env_term, sizeof env_term, "TERM=%s", term && strlen(term) < 100 ? term : "xterm");
  char shell[300], env_shell[320];
  snprintf(shell, sizeof shell, "/%s/bin/sh", graft_name);
  snprintf(env_shell, sizeof env_shell, "SHELL=%s", shell);
  char *envp[] = {env_home, env_path, env_tmp, env_hist, env_graft, env_term, env_shell, "PS1=attach \\h:\\w \\$ ", NULL};
  /* not a login shell: that would run the target's /etc/profile (its code, in our session) */
  char *default_cmd[] = {shell, NULL};
  if (!cmd[0]) cmd = default_cmd;

  if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) die("cannot become a subreaper");
  /* --announce 1: one marker line on stderr (not a terminal) before CMD starts, so
     agentenv knows that everything before it was the engine's and nothing after is */
  if (announce && !isatty(2)) {
    static const char marker[] = "\036agentenv-attach: ready\n";
    if (write(2, marker, sizeof marker - 1) < 0) { /* agentenv gone: CMD runs anyway */ }
  }
  /* on a terminal, Ctrl-C reaches CMD's process group from the terminal itself */
  int tty = isatty(0);
  sigset_t all, old;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, &old);
  child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    sigprocmask(SIG_SETMASK, &old, NULL);
    for (int fd = 3; fd < 1024; fd++) close(fd);
    execvpe(cmd[0], cmd, envp);
    /* the view's PATH is not ours: look CMD up in it by hand */
    if (!strchr(cmd[0], '/')) {
      char copy[8192], file[4400];
      snprintf(copy, sizeof copy, "%s", env_path + 5);
      for (char *save = NULL, *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        snprintf(file, sizeof file, "%s/%s", dir, cmd[0]);
        execve(file, cmd, envp);
      }
    }
    fprintf(stderr, "agentenv attach: %s: %s\n", cmd[0], strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
  }
  struct sigaction sa = {0};
  sa.sa_handler = on_signal;
  sigfillset(&sa.sa_mask);
  int forwarded[] = {SIGTERM, SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH, SIGINT, SIGQUIT};
  for (size_t k = 0; k < sizeof forwarded / sizeof *forwarded; k++) {
    if (tty && (forwarded[k] == SIGINT || forwarded[k] == SIGQUIT || forwarded[k] == SIGWINCH)) signal(forwarded[k], SIG_IGN);
    else sigaction(forwarded[k], &sa, NULL);
  }
  sigprocmask(SIG_SETMASK, &old, NULL);

  int status = 0;
  for (;;) {
    pid_t done = waitpid(-1, &status, 0);
    if (done == child) break;
    if (done < 0 && errno != EINTR) { status = 0; break; }
  }
  child = -1;
  end_descendants();
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}
