/* Keeps a process alive when a file it has memory-mapped shrinks.
 *
 * Reading a mapped page that lies past the end of its file raises SIGBUS, which ends the
 * process. For a range registered here, the SIGBUS handler instead maps a page of zeros
 * over the missing page, marks the range, and lets the read go on. The reader then sees
 * zeros and must check the mark (imgtool_map_guard_faulted) before trusting what it
 * read. Faults outside every registered range go to the handler that was installed
 * before, or end the process as they would have. A SIGBUS sent with kill(2) ends the
 * process, after the previous handler ran. */
#ifndef IMGTOOL_MAP_GUARD_H
#define IMGTOOL_MAP_GUARD_H
#include <stddef.h>

/* Registers the mapped range [start, start + length) and returns its slot, or -1 when
 * the handler cannot be installed or memory for more slots cannot be allocated. Installs
 * the handler on the first call. */
int imgtool_map_guard_register(const void *start, size_t length);

/* Removes the range of `slot`. Call it before unmapping the range. */
void imgtool_map_guard_unregister(int slot);

/* Returns 1 when a read inside the range of `slot` found a page missing, else 0. */
int imgtool_map_guard_faulted(int slot);

#endif
