// ImageService: the adapter that serves ImageCore as the NAS middleware's `vm.*` methods.
// It holds no image logic: a method table maps each name to an ImageCore call, a job
// manager tracks long calls, and a WebSocket server speaks the middleware's protocols.

import ImageCore
