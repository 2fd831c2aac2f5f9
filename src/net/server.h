/* server.h - the network edge: one libwebsockets service thread owns every
 * socket, every WebSocket connection and every HTTP transaction.
 *
 * Nothing below net/ touches them: workers and the agent thread post what
 * they produce to the outbox (work/outbox.h), which this thread drains
 * when woken. docs/ARCHITECTURE.md draws the layers. */
#ifndef CHATD_SERVER_H
#define CHATD_SERVER_H

struct app;

/* Serves until SIGINT/SIGTERM, then drains (SHUTDOWN_GRACE_SECONDS) and
 * returns the exit status. Turns still running when it returns end
 * through the pool and the agent client, which the caller keeps until
 * turn_active() is 0. */
int server_run(struct app *app);

#endif
