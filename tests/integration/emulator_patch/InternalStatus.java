/*
 * Replacement for io.grpc.InternalStatus inside the Cloud Pub/Sub emulator 0.8.20 jar.
 *
 * Why: the emulator bundles a grpc-api whose InternalStatus lacks the three-argument
 * asRuntimeException(Status, Metadata, boolean) that its bundled grpc-core calls when a
 * streaming-pull stream closes. The resulting NoSuchMethodError leaves that subscription
 * black-holing every later message, so a "worker restarts on the same subscription" test
 * cannot pass. Compiled with `javac --release 8` against the emulator jar and put first on the
 * classpath, this class restores the missing overload and keeps the original members.
 */
package io.grpc;

import javax.annotation.Nullable;

public final class InternalStatus {
  private InternalStatus() {}

  public static final Metadata.Key<String> MESSAGE_KEY = Status.MESSAGE_KEY;

  public static final Metadata.Key<Status> CODE_KEY = Status.CODE_KEY;

  public static StatusRuntimeException asRuntimeExceptionWithoutStacktrace(
      Status status, @Nullable Metadata trailers) {
    return new InternalStatusRuntimeException(status, trailers);
  }

  public static StatusRuntimeException asRuntimeException(
      Status status, @Nullable Metadata trailers, boolean withStackTrace) {
    if (withStackTrace) {
      return new StatusRuntimeException(status, trailers);
    }
    return new InternalStatusRuntimeException(status, trailers);
  }
}
