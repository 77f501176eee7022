/* See include/map_guard.h. The handler uses only atomics and system calls that are safe
 * in a signal handler on Linux (mmap, sigaction, raise). */
#define _GNU_SOURCE
#include "map_guard.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

enum { slot_count = 64 };

struct guarded_range {
    atomic_int claimed;      /* set by the register call that owns the slot */
    atomic_uintptr_t start; /* 0 while the slot is being filled or emptied */
    atomic_uintptr_t end;
    atomic_int faulted;
};

static struct guarded_range ranges[slot_count];
static struct sigaction previous_action;
static uintptr_t page_size;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static int installed;

static void pass_on(int signal_number, siginfo_t *info, void *context) {
    if ((previous_action.sa_flags & SA_SIGINFO) && previous_action.sa_sigaction != NULL) {
        previous_action.sa_sigaction(signal_number, info, context);
        return;
    }
    if (previous_action.sa_handler != SIG_DFL && previous_action.sa_handler != SIG_IGN) {
        previous_action.sa_handler(signal_number);
        return;
    }
    /* Restore the default action. A fault then repeats when the handler returns and ends
     * the process with a core dump, as without this handler. A SIGBUS sent by kill(2)
     * does not repeat, so it is raised again. */
    struct sigaction default_action = { .sa_handler = SIG_DFL };
    sigemptyset(&default_action.sa_mask);
    sigaction(SIGBUS, &default_action, NULL);
    if (info == NULL || info->si_code <= 0) {
        raise(SIGBUS);
    }
}

static void handle_bus_error(int signal_number, siginfo_t *info, void *context) {
    if (info != NULL && info->si_code > 0) {
        uintptr_t address = (uintptr_t)info->si_addr;
        for (int slot = 0; slot < slot_count; slot++) {
            uintptr_t start = atomic_load(&ranges[slot].start);
            if (start == 0 || address < start || address >= atomic_load(&ranges[slot].end)) {
                continue;
            }
            void *page = (void *)(address & ~(page_size - 1));
            void *zeros = mmap(page, page_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            if (zeros == MAP_FAILED) {
                break;
            }
            atomic_store(&ranges[slot].faulted, 1);
            return;
        }
    }
    pass_on(signal_number, info, context);
}

static void install(void) {
    long size = sysconf(_SC_PAGESIZE);
    if (size <= 0) {
        return;
    }
    page_size = (uintptr_t)size;
    struct sigaction action = { .sa_sigaction = handle_bus_error, .sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART };
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGBUS, &action, &previous_action) == 0) {
        installed = 1;
    }
}

int imgtool_map_guard_register(const void *start, size_t length) {
    pthread_once(&install_once, install);
    if (!installed || start == NULL || length == 0) {
        return -1;
    }
    for (int slot = 0; slot < slot_count; slot++) {
        int expected = 0;
        if (!atomic_compare_exchange_strong(&ranges[slot].claimed, &expected, 1)) {
            continue;
        }
        atomic_store(&ranges[slot].faulted, 0);
        atomic_store(&ranges[slot].end, (uintptr_t)start + length);
        atomic_store(&ranges[slot].start, (uintptr_t)start);
        return slot;
    }
    return -1;
}

void imgtool_map_guard_unregister(int slot) {
    if (slot < 0 || slot >= slot_count) {
        return;
    }
    atomic_store(&ranges[slot].start, 0);
    atomic_store(&ranges[slot].end, 0);
    atomic_store(&ranges[slot].claimed, 0);
}

int imgtool_map_guard_faulted(int slot) {
    if (slot < 0 || slot >= slot_count) {
        return 0;
    }
    return atomic_load(&ranges[slot].faulted);
}
