/* Crash points: named places where a test build (meson -Dcrash_points=true) kills the
 * daemon with SIGKILL when NANNY_TEST_CRASH_AT names the place, so that tests can see what
 * a restarted daemon makes of every phase of an operation. A release build has no such
 * code: the macro is empty. */
#ifndef NANNY_CRASH_POINT_H
#define NANNY_CRASH_POINT_H

#ifdef NANNY_CRASH_POINTS
void crash_point(const char *name);
#define CRASH_POINT(name) crash_point(name)
#else
#define CRASH_POINT(name) ((void)0)
#endif

#endif
