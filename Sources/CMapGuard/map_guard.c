/* See include/map_guard.h. The handler uses only atomics and system calls that are safe
 * in a signal handler on Linux (mmap, sigaction, raise). */
#define _GNU_SOURCE
#include "map_guard.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

enum { block_slots = 64 };

struct guarded_range {
    atomic_int claimed;      /* set by the register call that owns the slot */
    atomic_uintptr_t start; /* 0 while the slot is being filled or emptied */
    atomic_uintptr_t end;
    atomic_int faulted;
};

/* The slots form a list of blocks that only grows: register appends a block when every
 * slot is taken, and no block is ever freed, so the handler can walk the list without a
 * lock while another thread appends. A service runs as many decodes at once as callers
 * start, each with one map. */
struct range_block {
    struct guarded_range ranges[block_slots];
    _Atomic(struct range_block *) next;
};

static struct range_block first_block;
static struct sigaction previous_action;
static uintptr_t page_size;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static int installed;

static void pass_on(int signal_number, siginfo_t *info, void *context) {
    int sent = info == NULL || info->si_code <= 0;
    if ((previous_action.sa_flags & SA_SIGINFO) && previous_action.sa_sigaction != NULL) {
        previous_action.sa_sigaction(signal_number, info, context);
        if (!sent) {
            return;
        }
    } else if (previous_action.sa_handler != SIG_DFL && previous_action.sa_handler != SIG_IGN) {
        previous_action.sa_handler(signal_number);
        if (!sent) {
            return;
        }
    }
    /* Restore the default action. A fault then repeats when the handler returns and ends
     * the process with a core dump, as without this handler. A SIGBUS sent by kill(2)
     * does not repeat, so it is raised again, also after a previous handler returned:
     * the Swift runtime's crash handler prints a backtrace and returns, which let the
     * process go on. */
    struct sigaction default_action = { .sa_handler = SIG_DFL };
    sigemptyset(&default_action.sa_mask);
    sigaction(SIGBUS, &default_action, NULL);
    if (sent) {
        raise(SIGBUS);
    }
}

static void handle_bus_error(int signal_number, siginfo_t *info, void *context) {
    if (info != NULL && info->si_code > 0) {
        uintptr_t address = (uintptr_t)info->si_addr;
        for (struct range_block *block = &first_block; block != NULL; block = atomic_load(&block->next)) {
            for (int index = 0; index < block_slots; index++) {
                struct guarded_range *range = &block->ranges[index];
                uintptr_t start = atomic_load(&range->start);
                if (start == 0 || address < start || address >= atomic_load(&range->end)) {
                    continue;
                }
                void *page = (void *)(address & ~(page_size - 1));
                void *zeros = mmap(page, page_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
                if (zeros == MAP_FAILED) {
                    pass_on(signal_number, info, context);
                    return;
                }
                atomic_store(&range->faulted, 1);
                return;
            }
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

/* Returns the range of `slot`, or NULL when no block holds that slot. */
static struct guarded_range *range_of(int slot) {
    if (slot < 0) {
        return NULL;
    }
    struct range_block *block = &first_block;
    for (int skipped = slot / block_slots; skipped > 0 && block != NULL; skipped--) {
        block = atomic_load(&block->next);
    }
    return block == NULL ? NULL : &block->ranges[slot % block_slots];
}

int imgtool_map_guard_register(const void *start, size_t length) {
    pthread_once(&install_once, install);
    if (!installed || start == NULL || length == 0) {
        return -1;
    }
    struct range_block *block = &first_block;
    for (int first_slot = 0;; first_slot += block_slots) {
        for (int index = 0; index < block_slots; index++) {
            struct guarded_range *range = &block->ranges[index];
            int expected = 0;
            if (!atomic_compare_exchange_strong(&range->claimed, &expected, 1)) {
                continue;
            }
            atomic_store(&range->faulted, 0);
            atomic_store(&range->end, (uintptr_t)start + length);
            atomic_store(&range->start, (uintptr_t)start);
            return first_slot + index;
        }
        struct range_block *next = atomic_load(&block->next);
        if (next == NULL) {
            struct range_block *added = calloc(1, sizeof *added);
            if (added == NULL) {
                return -1;
            }
            /* Another thread may have appended a block meanwhile: then use that one. */
            if (atomic_compare_exchange_strong(&block->next, &next, added)) {
                next = added;
            } else {
                free(added);
            }
        }
        block = next;
    }
}

void imgtool_map_guard_unregister(int slot) {
    struct guarded_range *range = range_of(slot);
    if (range == NULL) {
        return;
    }
    atomic_store(&range->start, 0);
    atomic_store(&range->end, 0);
    atomic_store(&range->claimed, 0);
}

int imgtool_map_guard_faulted(int slot) {
    struct guarded_range *range = range_of(slot);
    return range == NULL ? 0 : atomic_load(&range->faulted);
}
