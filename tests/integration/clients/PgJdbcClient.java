// The PostgreSQL JDBC driver through the agent in transaction mode. With the driver's
// defaults (prepareThreshold=5) a PreparedStatement switches to a named server-side
// statement ("S_1"...) at its fifth execution. Run as a single-file program:
//   java -cp /usr/share/java/postgresql.jar PgJdbcClient.java URL USER PASSWORD ITERATIONS
// Prints "OK <checked> pids=<pid,...>"; exits non-zero on any mismatch.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.util.Properties;
import java.util.TreeSet;

public class PgJdbcClient {
  public static void main(String[] args) throws Exception {
    Properties props = new Properties();
    props.setProperty("user", args[1]);
    props.setProperty("password", args[2]);
    props.setProperty("sslmode", "disable");
    int iterations = Integer.parseInt(args[3]);
    TreeSet<Integer> pids = new TreeSet<>();
    int checked = 0;
    try (Connection conn = DriverManager.getConnection(args[0], props)) {
      conn.setAutoCommit(true);
      try (PreparedStatement ps = conn.prepareStatement("select ?::int * 5, pg_backend_pid()")) {
        for (int i = 0; i < iterations; i++) {
          ps.setInt(1, i);
          try (ResultSet rs = ps.executeQuery()) {
            rs.next();
            if (rs.getInt(1) != i * 5) throw new IllegalStateException("wrong result for " + i);
            pids.add(rs.getInt(2));
            checked++;
          }
        }
      }
      // Explicit transactions with two prepared statements each.
      conn.setAutoCommit(false);
      try (PreparedStatement upper = conn.prepareStatement("select upper(?)");
           PreparedStatement add = conn.prepareStatement("select ?::int + ?::int")) {
        for (int i = 0; i < iterations; i++) {
          upper.setString(1, "x" + i);
          add.setInt(1, i);
          add.setInt(2, 1);
          try (ResultSet a = upper.executeQuery(); ResultSet b = add.executeQuery()) {
            a.next();
            b.next();
            if (!a.getString(1).equals("X" + i) || b.getInt(1) != i + 1) {
              throw new IllegalStateException("wrong transaction result for " + i);
            }
          }
          conn.commit();
          checked++;
        }
      }
    }
    StringBuilder list = new StringBuilder();
    for (int pid : pids) list.append(list.length() == 0 ? "" : ",").append(pid);
    System.out.println("OK " + checked + " pids=" + list);
  }
}
