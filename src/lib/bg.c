/* bg.c - a polling background thread with a wake pipe (see bg.h). */
#include "lib/bg.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

int bg_start(struct bg *b, void *(*main)(void *), void *arg)
{
    b->running = 0;
    atomic_store(&b->stopping, 0);
    if (pipe(b->wake) != 0) {
        b->wake[0] = b->wake[1] = -1;
        return -1;
    }
    if (fcntl(b->wake[0], F_SETFL, O_NONBLOCK) != 0 || fcntl(b->wake[1], F_SETFL, O_NONBLOCK) != 0)
        return -1;
    if (pthread_create(&b->thread, NULL, main, arg) != 0)
        return -1;
    b->running = 1;
    return 0;
}

enum bg_wait bg_wait(struct bg *b, int fd, int ms)
{
    struct pollfd p[2] = {{.fd = b->wake[0], .events = POLLIN}, {.fd = fd, .events = POLLIN}};
    poll(p, fd >= 0 ? 2 : 1, ms);
    int woken = (p[0].revents & POLLIN) != 0;
    if (woken) {
        char buf[64];
        ssize_t r = read(b->wake[0], buf, sizeof(buf));
        (void)r;
    }
    if (fd >= 0 && p[1].revents != 0)
        return BG_READY;
    return woken ? BG_WOKEN : BG_TIMEOUT;
}

void bg_wake(struct bg *b)
{
    ssize_t w = write(b->wake[1], "w", 1);
    (void)w; /* full: a wake is pending anyway */
}

int bg_stopping(struct bg *b) { return atomic_load(&b->stopping); }

void bg_stop(struct bg *b)
{
    atomic_store(&b->stopping, 1);
    if (b->running) {
        bg_wake(b);
        pthread_join(b->thread, NULL);
        b->running = 0;
    }
    if (b->wake[0] >= 0)
        close(b->wake[0]);
    if (b->wake[1] >= 0)
        close(b->wake[1]);
    b->wake[0] = b->wake[1] = -1;
}
