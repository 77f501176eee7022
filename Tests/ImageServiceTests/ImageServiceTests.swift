import Testing
@testable import ImageService
